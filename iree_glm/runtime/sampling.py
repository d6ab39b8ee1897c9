"""Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from iree_glm.errors import RequestError
from iree_glm.validation import ValidationError, bounded, from_data


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = bounded(0.0, min=0.0)  # 0: greedy
    top_k: int = bounded(0, min=0)  # 0: off
    top_p: float = bounded(1.0, max=1.0)  # 1: off
    seed: int | None = bounded(None, min=0)  # numpy's generators take no negative seed

    def check(self) -> None:
        """Types, NaN/inf and bounds through validation.py (the values may come from a request)."""
        try:
            from_data(SamplingParams, {f.name: getattr(self, f.name) for f in fields(self)}, "sampling")
        except ValidationError as e:
            raise RequestError(str(e).removeprefix("sampling: ")) from None
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
