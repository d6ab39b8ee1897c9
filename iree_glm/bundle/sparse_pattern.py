"""The block-sparse attention pattern `local=W,global=G,block=B[,ring[=N]]` (no torch: the
runtime reads it from a bundle's manifest to know how its KV cache is laid out)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from iree_glm.errors import UserError


@dataclass(frozen=True)
class SparsePattern:
    """Window of `local` keys, `global_` leading tokens, query blocks of `block`; `ring` > 0:
    a sliding-window KV cache of G + `ring` slots instead of one slot per position."""

    local: int
    global_: int
    block: int
    ring: int = 0  # slots of the sliding window (>= local + block), 0: cache indexed by position

    def __str__(self) -> str:
        text = f"local={self.local},global={self.global_},block={self.block}"
        return text + (f",ring={self.ring}" if self.ring else "")

    @property
    def ring_slots(self) -> int:
        """KV-cache slots of a sliding-window cache: the G globals plus the ring."""
        return self.global_ + self.ring

    @property
    def chunk(self) -> int:
        """Most tokens one call may write into the ring: each query's W keys must survive the
        writes of the tokens after it in the same call."""
        return self.ring - self.local

    def call_tokens(self, chunk: int) -> int:
        """Tokens per prefill call given the profile's `chunk` (0: whole prompt): a ring cache
        takes at most `self.chunk` per call; a position-indexed cache takes `chunk` as it is."""
        return min(chunk or self.chunk, self.chunk) if self.ring else chunk

    def check_shape(self, option: str = "--sparse-attention") -> None:
        """Validate what does not depend on the context (a profile's default pattern has none)."""
        for name, value in (("local", self.local), ("global", self.global_), ("block", self.block)):
            if value <= 0:
                raise UserError(f"{option}: {name} must be positive (got {value})")
        if self.ring and self.ring < self.local + self.block:
            raise UserError(f"{option}: ring={self.ring} is smaller than local+block={self.local + self.block} "
                            "(the ring keeps the window of a whole query block)")

    def check(self, max_context: int, option: str = "--sparse-attention") -> None:
        """Validate for a bundle of `max_context` positions."""
        self.check_shape(option)
        if self.block > max_context:
            raise UserError(f"{option}: block={self.block} is larger than the context ({max_context})")
        if self.global_ >= max_context:
            raise UserError(f"{option}: global={self.global_} must be smaller than the context ({max_context})")
        if self.ring and self.ring_slots >= max_context:
            raise UserError(f"{option}: a ring cache of {self.ring_slots} slots (global+ring) saves nothing at "
                            f"context {max_context}; drop 'ring' or raise --max-context")


def parse_pattern(text: str, option: str = "--sparse-attention") -> SparsePattern:
    """'local=W,global=G,block=B[,ring[=N]]' -> SparsePattern (one-line UserError if malformed).
    A bare `ring` is a ring of W + B slots."""
    values: dict[str, int] = {}
    for part in text.split(","):
        m = re.fullmatch(r"\s*(local|global|block|ring)\s*=\s*(-?\d+)\s*", part)
        if part.strip() == "ring" and "ring" not in values:
            values["ring"] = -1  # W + B, resolved below
            continue
        if not m or (m.group(1) == "ring" and int(m.group(2)) <= 0):
            what = "ring must be a positive slot count" if m else "expected local=W,global=G,block=B[,ring[=N]]"
            raise UserError(f"{option}: cannot parse '{part.strip()}' in '{text}' ({what})")
        if m.group(1) in values:
            raise UserError(f"{option}: '{m.group(1)}' given twice in '{text}'")
        values[m.group(1)] = int(m.group(2))
    missing = [k for k in ("local", "global", "block") if k not in values]
    if missing:
        raise UserError(f"{option}: missing {', '.join(missing)} in '{text}' (expected local=W,global=G,block=B)")
    ring = values.get("ring", 0)
    if ring == -1:
        ring = values["local"] + values["block"]
    return SparsePattern(values["local"], values["global"], values["block"], ring)
