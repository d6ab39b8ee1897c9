"""One generation request's bookkeeping: its tokens, text, stop conditions and timings.

Shared by the one-at-a-time loop in `Session` and the batching engine, so both end requests
for the same reasons (stop id, stop string, max new tokens, full context) and show the
same text. Stop strings are found in the decoded text; text that could be the start of a
stop string is held back until it is known not to be one, so a stream never shows it. A
request with a grammar (`constraint`) samples only the tokens it allows and ends when the
grammar is complete; one that asked for log-probabilities records them per token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from iree_glm.errors import RequestError
from iree_glm.bundle.tokenizer import StreamDecoder, TextTokenizer
from iree_glm.runtime.sampling import Sampler, TokenLogprob, token_logprob


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    generated_ids: list[int]
    text: str
    prefill_ms: float
    decode_tok_s: float
    # "eos", "grammar" (the constraint is complete), "stop" (a stop string), "max_new_tokens",
    # "context_full" or "cancelled"
    stop_reason: str
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    # Speculative decoding (None without a draft): accepted / proposed draft tokens, and
    # generated tokens per call of the target after the prompt.
    acceptance_rate: float | None = None
    tokens_per_target_call: float | None = None
    draft_accepted: int | None = None  # draft tokens kept (None without a draft) ...
    draft_rejected: int | None = None  # ... and proposed but not kept
    target_calls: int | None = None  # decode / verify calls of the target after the prompt (with a draft or forced tokens)
    # Tokens the request's grammar forced and one verify call checked with the step before them
    # (runtime/speculative.py); None where calls did not check forced tokens.
    forced_tokens: int | None = None
    logprobs: list[TokenLogprob] | None = None  # per generated token, when asked for

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class StreamEvent:
    """One generated token as it arrives (`text` may be empty while a stop string is possible)."""

    token_id: int
    text: str
    logprob: TokenLogprob | None = None


class StopStrings:
    """Cuts streamed text at the first stop string, holding back a tail that may begin one."""

    def __init__(self, stops: tuple[str, ...]):
        if any(not s for s in stops):
            raise RequestError("stop strings must not be empty")
        self.stops = stops
        self.held = ""

    def push(self, piece: str) -> tuple[str, bool]:
        """Returns (text safe to show, whether a stop string was reached)."""
        text = self.held + piece
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.held = ""
            return text[: min(hits)], True
        keep = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), keep, -1):
                if s.startswith(text[-n:]):
                    keep = n
                    break
        self.held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


@dataclass
class RequestState:
    ids: list[int]
    max_new_tokens: int
    sampler: Sampler
    stop_ids: set[int]
    max_context: int
    tokenizer: TextTokenizer | None = None
    stop_strings: tuple[str, ...] = ()
    constraint: object | None = None  # a runtime.constrained.Constraint
    top_logprobs: int | None = None  # None: no log-probabilities; else how many alternatives per token
    pos: int = 0  # tokens whose KV is in the cache
    generated: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    stop_reason: str = ""
    cached_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_tokens: int = 0
    speculative: bool = False  # decoded with a draft (runtime/speculative.py)
    drafted: int = 0  # draft tokens proposed ...
    draft_accepted: int = 0  # ... and kept
    target_calls: int = 0  # decode / verify calls after the prompt
    forced_tokens: int | None = None  # kept tokens the grammar forced (None: not checked in verify calls)
    created: float = field(default_factory=time.perf_counter)
    logprobs: list[TokenLogprob] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._decoder = StreamDecoder(self.tokenizer) if self.tokenizer else None
        if self.stop_strings and self._decoder is None:
            raise RequestError("stop strings need a bundle with a tokenizer")
        self._stops = StopStrings(self.stop_strings) if self.stop_strings else None
        if self.max_new_tokens == 0:
            self.stop_reason = "max_new_tokens"

    @property
    def done(self) -> bool:
        return bool(self.stop_reason)

    def choose(self, logits) -> int:
        """The next token from this step's logits (masked by the grammar, if any); records its
        log-probability when asked for."""
        token = self.pick(logits)
        self.record_logprob(logits, token)
        return token

    def pick(self, logits) -> int:
        """`choose` without recording: the grammar's mask, then the sampler (logit bias and
        penalties over the tokens generated so far)."""
        masked = self.constraint.mask(logits) if self.constraint is not None else logits
        return self.sampler(masked, self.generated)

    def record_logprob(self, logits, token: int) -> None:
        """Before `accept(token)`: its log-probability under these (raw) logits, if asked for."""
        if self.top_logprobs is not None:
            self.logprobs.append(token_logprob(logits, token, self.top_logprobs))

    def accept(self, token: int) -> StreamEvent:
        """Record a sampled token; sets `stop_reason` when the request has ended."""
        self.generated.append(token)
        if self.constraint is not None and token not in self.stop_ids:
            self.constraint.consume(token)
        text = self._decoder.push(token) if self._decoder else ""
        if self._stops is not None:
            text, hit = self._stops.push(text)
            if hit:
                self.stop_reason = "stop"
        if not self.stop_reason:
            if token in self.stop_ids:
                self.stop_reason = "eos"
            elif self.constraint is not None and self.constraint.finished:
                self.stop_reason = "grammar"
            elif len(self.generated) >= self.max_new_tokens:
                self.stop_reason = "max_new_tokens"
            elif self.pos >= self.max_context:
                self.stop_reason = "context_full"
        if self.stop_reason and self._stops is not None and self.stop_reason != "stop":
            text += self._stops.flush()
        self.pieces.append(text)
        logprob = self.logprobs[-1] if self.top_logprobs is not None and len(self.logprobs) == len(self.generated) else None
        return StreamEvent(token, text, logprob)

    def cancel(self) -> None:
        if not self.stop_reason:
            self.stop_reason = "cancelled"

    def result(self) -> GenerationResult:
        counted = self.speculative or self.forced_tokens is not None
        return GenerationResult(
            prompt_ids=self.ids,
            generated_ids=self.generated,
            text="".join(self.pieces),
            prefill_ms=self.prefill_s * 1e3,
            decode_tok_s=self.decode_tokens / self.decode_s if self.decode_s > 0 else 0.0,
            stop_reason=self.stop_reason,
            cached_tokens=self.cached_tokens,
            acceptance_rate=(self.draft_accepted / self.drafted if self.drafted else 0.0) if self.speculative else None,
            tokens_per_target_call=(self.decode_tokens / self.target_calls if self.target_calls else 0.0) if counted else None,
            draft_accepted=self.draft_accepted if self.speculative else None,
            draft_rejected=self.drafted - self.draft_accepted if self.speculative else None,
            target_calls=self.target_calls if counted else None,
            forced_tokens=self.forced_tokens,
            logprobs=list(self.logprobs) if self.top_logprobs is not None else None,
        )
