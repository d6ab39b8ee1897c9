"""Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iree_glm.errors import RequestError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    seed: int | None = None

    def check(self) -> None:
        if self.temperature < 0:
            raise RequestError(f"temperature must be >= 0 (got {self.temperature})")
        if self.top_k < 0:
            raise RequestError(f"top_k must be >= 0 (got {self.top_k})")
        if not 0 < self.top_p <= 1:
            raise RequestError(f"top_p must be in (0, 1] (got {self.top_p})")


class Sampler:
    def __init__(self, params: SamplingParams):
        params.check()
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray) -> int:
        if self.params.temperature == 0:
            return int(np.argmax(logits))
        return self.draw(self.distribution(logits))

    def draw(self, probs: np.ndarray) -> int:
        """A token drawn from `probs` (float64, sums to 1) with this sampler's generator."""
        return int(self.rng.choice(probs.size, p=probs))

    def distribution(self, logits: np.ndarray) -> np.ndarray:
        """The distribution a token is drawn from (float64): temperature, then top-k, then top-p;
        greedy: all mass on the argmax. Speculative sampling compares these (speculative.py)."""
        p = self.params
        if p.temperature == 0:
            probs = np.zeros(logits.size, np.float64)
            probs[int(np.argmax(logits))] = 1.0
            return probs
        x = logits.astype(np.float64) / p.temperature
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
