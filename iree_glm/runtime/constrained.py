"""Constrained decoding: a JSON schema, a regular expression or a Lark grammar decides which
tokens each step may sample.

The matching is llguidance's (a Rust Earley parser over a lexer, with a token trie for the
vocabulary; see docs/server.md for why it and not xgrammar or outlines-core). This module only
wraps it: `Vocabulary` is a bundle's tokenizer as llguidance sees it (built once per session),
`Grammar` says what a request's output must match, and `Constraint` follows one request: it
masks each step's logits to the tokens the grammar allows and consumes the token that was
sampled. Once the grammar is complete and can take nothing more, the request ends ("eos").

llguidance is an optional dependency (`pip install 'iree_glm[constrained]'`, included in
`[serve]`): a runtime that never constrains does not need it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iree_glm.errors import RequestError

KINDS = ("json_schema", "regex", "lark")


def _llguidance():
    try:
        import llguidance
        import llguidance.numpy  # noqa: F401  (the bitmask helpers)
    except ImportError:
        raise RequestError("constrained decoding needs llguidance: pip install 'iree_glm[constrained]'") from None
    return llguidance


@dataclass(frozen=True)
class Grammar:
    """What the generated text must match. `kind`: "json_schema" (`source` a JSON schema, as a
    dict or JSON text), "regex" (Rust regex syntax, matched in full) or "lark" (llguidance's Lark
    dialect, which may embed JSON schemas as `%json{...}`)."""

    kind: str
    source: str | dict

    @classmethod
    def json_schema(cls, schema: dict | str) -> "Grammar":
        return cls("json_schema", schema)

    @classmethod
    def json_object(cls) -> "Grammar":
        """Any JSON object (OpenAI's response_format {"type": "json_object"})."""
        return cls("json_schema", {"type": "object"})

    @classmethod
    def regex(cls, pattern: str) -> "Grammar":
        return cls("regex", pattern)

    @classmethod
    def lark(cls, text: str) -> "Grammar":
        return cls("lark", text)

    def compiled(self) -> str:
        """The grammar in llguidance's serialized form."""
        llg = _llguidance()
        if self.kind == "json_schema":
            schema = self.source if isinstance(self.source, dict) else _json(self.source)
            try:
                return llg.LLMatcher.grammar_from_json_schema(schema)
            except (ValueError, TypeError) as e:
                raise RequestError(f"the JSON schema cannot be used: {e}") from None
        if self.kind == "regex":
            return llg.LLMatcher.grammar_from_regex(_text(self.source, "regex"))
        if self.kind == "lark":
            return llg.LLMatcher.grammar_from_lark(_text(self.source, "lark"))
        raise RequestError(f"grammar kind must be one of {', '.join(KINDS)} (got {self.kind!r})")

    def problem(self) -> str | None:
        """What makes this grammar unusable whatever the vocabulary (an unknown JSON type, a
        regex that does not parse), in one line; None if nothing does."""
        llg = _llguidance()
        try:
            text = self.compiled()
        except RequestError as e:  # llguidance refused it outright
            return str(e)
        error = llg.LLMatcher.validate_grammar(text)
        return one_line(error) if error else None


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")  # name -> schema
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
# Schemas a value must match (not `not` or `if`, where a closed object would widen what passes).
_SCHEMA_ONES = ("items", "additionalItems", "contains", "then", "else", "additionalProperties", "unevaluatedItems")


def closed_objects(schema):
    """`schema` with every object it describes closed to the properties it names: an object
    schema that says nothing of other keys (no additionalProperties, patternProperties or
    unevaluatedProperties) gets additionalProperties false. This is OpenAI's `strict` mode, which
    demands additionalProperties false on every object: without it a small model pads a tool's
    arguments with keys of its own, which the schema allows. Walks the schema's structure only
    (never `enum`, `const` or `default` values). Returns a new schema; booleans pass through."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed_objects(sub) for name, sub in out[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [closed_objects(sub) for sub in out[key]]
    for key in _SCHEMA_ONES:
        if isinstance(out.get(key), list):  # draft 4's tuple form of `items`
            out[key] = [closed_objects(sub) for sub in out[key]]
        elif key in out:
            out[key] = closed_objects(out[key])
    kind = out.get("type")
    describes_object = kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in out
    if describes_object and not {"additionalProperties", "patternProperties", "unevaluatedProperties"} & set(out):
        out["additionalProperties"] = False
    return out


def one_line(error: str) -> str:
    """llguidance's message (several lines for a regex: the pattern, a caret, the error) as one."""
    return " ".join(line.strip() for line in error.strip().splitlines() if line.strip())


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise RequestError(f"the JSON schema is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise RequestError("the JSON schema must be a JSON object")
    return value


def _text(source, kind: str) -> str:
    if not isinstance(source, str):
        raise RequestError(f"a {kind} grammar must be a string")
    return source


class Vocabulary:
    """A bundle's tokenizer for llguidance (its token trie), and the logits' size."""

    def __init__(self, tokenizer_json: Path, vocab_size: int, eos_ids: tuple[int, ...]):
        llg = _llguidance()
        self.size = vocab_size
        self.eos_ids = tuple(eos_ids)
        self.tokenizer = llg.LLTokenizer(str(tokenizer_json), n_vocab=vocab_size, eos_token=list(eos_ids) or None)

    def token_bytes(self, token: int) -> bytes:
        """The bytes token `token` stands for (b"" for special tokens such as EOS)."""
        return self.tokenizer.decode_bytes([token])

    def compile(self, grammar: Grammar) -> str:
        """`grammar` checked against this vocabulary; RequestError with the parser's message if
        it cannot be built."""
        text = grammar.compiled()
        llg = _llguidance()
        error = llg.LLMatcher.validate_grammar(text, self.tokenizer)
        if error:
            raise RequestError(f"the {grammar.kind.replace('_', ' ')} cannot be compiled: {one_line(error)}")
        return text


class Constraint:
    """One request's grammar state: `mask` the next step's logits, `consume` the sampled token."""

    def __init__(self, vocabulary: Vocabulary, compiled: str):
        llg = _llguidance()
        self.vocabulary = vocabulary
        self._matcher = llg.LLMatcher(vocabulary.tokenizer, compiled, log_level=0)
        if self._matcher.is_error():
            raise RequestError(f"the grammar cannot be compiled: {self._matcher.get_error()}")
        self._bitmask = llg.numpy.allocate_token_bitmask(1, vocabulary.size)
        self.mask_s = 0.0  # time spent computing masks (for benchmarks)

    def allowed(self) -> np.ndarray:
        """A bool array over the vocabulary: the tokens the grammar allows next."""
        t = time.perf_counter()
        self._matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)  # releases the GIL
        allowed = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")[: self.vocabulary.size].view(bool)
        self.mask_s += time.perf_counter() - t
        return allowed

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """`logits` with every token the grammar forbids at -inf (a new array)."""
        allowed = self.allowed()
        if not allowed.any():
            raise RequestError(f"the grammar allows no next token ({self._matcher.get_error() or 'dead end'})")
        return np.where(allowed, logits, -np.inf)

    def along(self, tokens: list[int]) -> list[np.ndarray]:
        """The `allowed` arrays before each of `tokens` and after the last, as steps that chose
        them would meet them, for the longest prefix the grammar takes (n tokens: n + 1 arrays;
        it ends after a token that completes the grammar). Speculative decoding checks a draft
        with them; the matcher is left as it was."""
        masks, taken = [self.allowed()], 0
        for token in tokens:
            if self.finished or not masks[-1][token] or not self._matcher.consume_token(token):
                break
            taken += 1
            masks.append(self.allowed())
        if taken and not self._matcher.rollback(taken):
            raise RuntimeError(f"the grammar could not take back {taken} draft token(s): {self._matcher.get_error()}")
        return masks

    def forced(self) -> list[int]:
        """Tokens the grammar forces next (llguidance's fast-forward tokens: the bytes every
        continuation starts with, tokenized), e.g. a JSON key and its quotes; [] where the model
        has a choice. They are a tokenization of forced text, not necessarily the model's, so
        speculative decoding checks them as draft tokens (runtime/speculative.py)."""
        if self.finished:
            return []
        t = time.perf_counter()
        tokens = self._matcher.compute_ff_tokens()
        self.mask_s += time.perf_counter() - t
        return [int(token) for token in tokens]

    def consume(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise RequestError(f"token {token} does not fit the grammar: {self._matcher.get_error()}")

    @property
    def finished(self) -> bool:
        """The text is complete and the grammar can take nothing more (only EOS would fit)."""
        return self._matcher.is_stopped()

    @property
    def accepting(self) -> bool:
        return self._matcher.is_accepting()


class ConstraintFactory:
    """Builds `Constraint`s for one session; the vocabulary is built on first use (~ms for a
    byte-level tokenizer, ~1 s for a 150k-token one), once, under a lock."""

    def __init__(self, tokenizer_json: Path | None, vocab_size: int, eos_ids: tuple[int, ...]):
        self._args = (tokenizer_json, vocab_size, eos_ids)
        self._vocabulary: Vocabulary | None = None
        self._lock = threading.Lock()

    @property
    def vocabulary(self) -> Vocabulary:
        with self._lock:
            if self._vocabulary is None:
                tokenizer_json, vocab_size, eos_ids = self._args
                if tokenizer_json is None:
                    raise RequestError("constrained decoding needs a bundle with a tokenizer")
                self._vocabulary = Vocabulary(tokenizer_json, vocab_size, eos_ids)
            return self._vocabulary

    def __call__(self, grammar: Grammar) -> Constraint:
        vocabulary = self.vocabulary
        return Constraint(vocabulary, vocabulary.compile(grammar))
