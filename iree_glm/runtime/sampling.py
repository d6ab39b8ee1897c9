"""Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling, after
a request's logit bias and presence / frequency penalties; and the log-probabilities a client
may ask for."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from iree_glm.errors import RequestError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    seed: int | None = None  # any integer in [-2**63, 2**64); negative ones are taken modulo 2**64
    presence_penalty: float = 0.0  # subtracted once from the logit of every token generated so far
    frequency_penalty: float = 0.0  # subtracted per occurrence in the generated tokens
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit

    def check(self) -> None:
        for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise RequestError(f"{name} must be a finite number (got {value!r})")
        if self.temperature < 0:
            raise RequestError(f"temperature must be >= 0 (got {self.temperature})")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise RequestError(f"top_k must be an integer >= 0 (got {self.top_k!r})")
        if not 0 < self.top_p <= 1:
            raise RequestError(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.seed is not None and not (isinstance(self.seed, int) and -(2**63) <= self.seed < 2**64):
            raise RequestError(f"seed must be an integer in [-2**63, 2**64) (got {self.seed!r})")
        for token, bias in self.logit_bias.items():
            if not (isinstance(bias, (int, float)) and math.isfinite(bias)):
                raise RequestError(f"logit_bias[{token}] must be a finite number (got {bias!r})")


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

    def __call__(self, logits: np.ndarray, generated: list[int] = ()) -> int:
        """The next token of logits that may hold -inf for tokens a grammar forbids."""
        p = self.params
        x = self.adjust(logits, list(generated)) if (self._bias_ids.size or p.presence_penalty or p.frequency_penalty) else logits
        if p.temperature == 0:
            return int(np.argmax(x))
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
        return int(self.rng.choice(probs.size, p=probs))


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
