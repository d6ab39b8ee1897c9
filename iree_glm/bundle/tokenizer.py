"""Text <-> token ids through a Hugging Face `tokenizer.json` (the `tokenizers` library)."""

from __future__ import annotations

from pathlib import Path

from iree_glm.errors import BundleError


class TextTokenizer:
    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.path = path
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise BundleError(f"{path}: cannot read tokenizer ({e})") from None

    def encode(self, text: str) -> list[int]:
        # encode_batch releases the GIL while it works (encode does not): a long prompt being
        # tokenized on one thread does not stop the others (the server's event loop).
        return self._tok.encode_batch([text], add_special_tokens=False)[0].ids

    @property
    def max_token_bytes(self) -> int:
        """An upper bound on the bytes of text one token covers (the longest vocabulary entry,
        in UTF-8): a text of B bytes has at least B / max_token_bytes tokens."""
        if not hasattr(self, "_max_token_bytes"):
            vocab = self._tok.get_vocab(with_added_tokens=True)
            self._max_token_bytes = max((len(t.encode("utf-8", "replace")) for t in vocab), default=1)
        return self._max_token_bytes

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)


class StreamDecoder:
    """Turns a growing list of ids into text pieces without splitting multi-byte characters."""

    def __init__(self, tokenizer: TextTokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for more bytes
            return ""
        piece = text[len(self.emitted) :] if text.startswith(self.emitted) else text
        self.emitted = text
        return piece


def byte_level_tokenizer_json(eos_token: str = "<|endoftext|>") -> str:
    """A tokenizer with one token per byte plus an end-of-text token (for untrained models)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(eos_token, special=True)])
    return tok.to_str()
