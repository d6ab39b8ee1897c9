"""The KV cache on the device: one (k, v) pair of buffers per layer, [rows, kv_heads, capacity, head_dim].

A request owns one row (its slot). The compiled functions write new entries into the
buffers in place (see iree_glm/export.py) and read only the first n positions, n given by
the length of their `key_positions` input; `attended_keys` picks n for a step: every position
in use, rounded up to `KEY_GRANULARITY` so the compiled code sees tile-friendly sizes.
Positions beyond what a row has written hold zeros or an earlier request's (finite) entries;
attention masks them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


_KEY_POSITIONS: dict[int, np.ndarray] = {}


def key_positions(n: int) -> np.ndarray:
    """The `key_positions` input 0..n-1 (int64), shared between calls."""
    keys = _KEY_POSITIONS.get(n)
    if keys is None:
        keys = _KEY_POSITIONS[n] = np.arange(n, dtype=np.int64)
    return keys


@dataclass
class KVCache:
    """Device buffers k_0, v_0, k_1, v_1, ... (the order the functions take them), `rows` rows each."""

    buffers: list
    rows: int

    @classmethod
    def zeros(cls, device, layers: int, rows: int, kv_heads: int, capacity: int, head_dim: int, dtype=np.float32,
              upload=None) -> "KVCache":
        """`upload`: host array -> device array, where the buffers need particular memory."""
        import iree.runtime as rt

        zeros = np.zeros((rows, kv_heads, capacity, head_dim), dtype)
        put = upload or (lambda a: rt.asdevicearray(device, a))
        return cls([put(zeros) for _ in range(2 * layers)], rows)

    def read(self, slot: int, length: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Host copies of row `slot`'s positions start..length-1: k, v [L, 1, Hkv, length - start, D]."""
        rows = [np.array(b.to_host()[slot : slot + 1, :, start:length]) for b in self.buffers]
        return np.stack(rows[0::2]), np.stack(rows[1::2])
