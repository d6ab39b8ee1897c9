"""Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling, after
a request's logit bias and presence / frequency penalties; and the log-probabilities a client
may ask for."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from iree_glm.errors import RequestError
from iree_glm.validation import ValidationError, bounded, from_data


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = bounded(0.0, min=0.0)  # 0: greedy
    top_k: int = bounded(0, min=0)  # 0: off
    top_p: float = bounded(1.0, max=1.0)  # 1: off
    seed: int | None = bounded(None, min=-(2**63), max=2**64 - 1)  # negative seeds are taken modulo 2**64
    presence_penalty: float = 0.0  # subtracted once from the logit of every token generated so far
    frequency_penalty: float = 0.0  # subtracted per occurrence in the generated tokens
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit

    def check(self) -> None:
        """Types, NaN/inf and bounds through validation.py (the values may come from a request)."""
        try:
            from_data(SamplingParams, {f.name: getattr(self, f.name) for f in fields(self)}, "sampling")
        except ValidationError as e:
            raise RequestError(str(e).removeprefix("sampling: ")) from None
        if not 0 < self.top_p <= 1:
            raise RequestError(f"top_p must be in (0, 1] (got {self.top_p})")


class Sampler:
    def __init__(self, params: SamplingParams, vocab_size: int | None = None):
        params.check()
        if vocab_size is not None:
            bad = [t for t in params.logit_bias if not (isinstance(t, int) and 0 <= t < vocab_size)]
            if bad:
                raise RequestError(f"logit_bias: token id {bad[0]!r} is outside the vocabulary (0..{vocab_size - 1})")
        self.params = params
        self.rng = np.random.default_rng(None if params.seed is None else params.seed % 2**64)
        self._bias_ids = np.asarray(list(params.logit_bias), np.int64)
        self._bias = np.asarray(list(params.logit_bias.values()), np.float64)

    def adjust(self, logits: np.ndarray, generated: list[int]) -> np.ndarray:
        """The logits after logit bias and penalties (float64, a new array)."""
        p = self.params
        x = np.asarray(logits, np.float64).copy()
        if self._bias_ids.size:
            x[self._bias_ids] += self._bias
        if generated and (p.presence_penalty or p.frequency_penalty):
            ids, counts = np.unique(np.asarray(generated, np.int64), return_counts=True)
            x[ids] -= p.presence_penalty + p.frequency_penalty * counts
        return x

    def scores(self, logits: np.ndarray, generated: list[int] = ()) -> np.ndarray:
        """What a greedy step takes the argmax of: the logits after bias and penalties where the
        request has any (`adjust`), else the logits themselves."""
        p = self.params
        return self.adjust(logits, list(generated)) if (self._bias_ids.size or p.presence_penalty or p.frequency_penalty) else logits

    def __call__(self, logits: np.ndarray, generated: list[int] = ()) -> int:
        """The next token of logits that may hold -inf for tokens a grammar forbids."""
        x = self.scores(logits, generated)
        if self.params.temperature == 0:
            return int(np.argmax(x))
        return self.draw(self._distribution(x))

    def draw(self, probs: np.ndarray) -> int:
        """A token drawn from `probs` (float64, sums to 1) with this sampler's generator."""
        return int(self.rng.choice(probs.size, p=probs))

    def distribution(self, logits: np.ndarray, generated: list[int] = ()) -> np.ndarray:
        """The distribution a token is drawn from (float64): bias and penalties, temperature,
        top-k, top-p; greedy: all mass on the argmax. Speculative sampling compares these."""
        return self._distribution(self.scores(logits, generated))

    def _distribution(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        if p.temperature == 0:
            probs = np.zeros(np.asarray(x).size, np.float64)
            probs[int(np.argmax(x))] = 1.0
            return probs
        x = np.asarray(x, np.float64) / p.temperature
        if p.top_k and p.top_k < x.size:
            kth = np.partition(x, -p.top_k)[-p.top_k]
            x = np.where(x < kth, -np.inf, x)
        probs = np.exp(x - x.max())
        probs /= probs.sum()
        if p.top_p < 1:
            order = np.argsort(-probs)
            cum = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cum, p.top_p)) + 1]
            trimmed = np.zeros_like(probs)
            trimmed[keep] = probs[keep]
            probs = trimmed / trimmed.sum()
        return probs


@dataclass(frozen=True)
class TokenLogprob:
    """A sampled token's log-probability under the model (the raw logits' log-softmax: before
    temperature, penalties and any grammar mask), with the `top` most likely alternatives."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def token_logprob(logits: np.ndarray, token: int, top: int) -> TokenLogprob:
    lp = log_softmax(logits)
    best: tuple[tuple[int, float], ...] = ()
    if top:
        idx = np.argpartition(-lp, min(top, lp.size - 1))[:top]
        idx = idx[np.lexsort((idx, -lp[idx]))]  # by logprob, ties by id: deterministic
        best = tuple((int(i), float(lp[i])) for i in idx)
    return TokenLogprob(token, float(lp[token]), best)
