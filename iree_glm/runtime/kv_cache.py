"""The KV cache on the device: one (k, v) pair of buffers per layer, [rows, kv_heads, capacity, head_dim].

A request owns one row (its slot). The compiled functions write new entries into the
buffers in place (see iree_glm/export.py) and read only the first n positions, n given by
the length of their `key_positions` input; `attended_keys` picks n for a step: every position
in use, rounded up to `KEY_GRANULARITY` so the compiled code sees tile-friendly sizes.
Positions beyond what a row has written hold zeros or an earlier request's (finite) entries;
attention masks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    dtype: np.dtype = np.dtype(np.float32)  # the element type; parts are cast to it as astype would
    _views: list | None = field(default=None, repr=False)  # host_views' answer, once known
    device: object = field(default=None, repr=False)  # the HAL device the buffers live on
    device_name: str = ""  # its name in the bundle's plans (reports)

    @classmethod
    def zeros(cls, device, layers: int, rows: int, kv_heads: int, capacity: int, head_dim: int, dtype=np.float32,
              upload=None) -> "KVCache":
        """`upload`: host array -> device array, where the buffers need particular memory."""
        import iree.runtime as rt

        zeros = np.zeros((rows, kv_heads, capacity, head_dim), dtype)
        put = upload or (lambda a: rt.asdevicearray(device, a))
        return cls([put(zeros) for _ in range(2 * layers)], rows, np.dtype(dtype), device=device)

    def move_to(self, device, upload=None) -> int:
        """Put every buffer on `device` in place (a plan switch between decode devices); returns
        the bytes copied. Each buffer is read through a mapping (local-task memory is the
        process's; Vulkan caches are made host-visible, see Session.new_cache) and copied once
        into a new allocation on `device` (`upload`: where it needs host-visible memory). Whole
        buffers, every row: a copy of the live positions alone would need a zero fill of the
        rest first. The caller holds the lock that orders device calls."""
        import iree.runtime as rt

        put = upload or (lambda a: rt.asdevicearray(device, a))
        moved = [put(b.to_host()) for b in self.buffers]
        self.buffers, self._views, self.device = moved, None, device
        return sum(int(np.prod(b.shape)) * np.dtype(b.dtype).itemsize for b in moved)

    def host_views(self) -> list[np.ndarray] | None:
        """Writable host arrays that are the buffers' memory (CPU devices: the device's memory is
        the process's), or None where it is not (a GPU: it takes `store_kv`). Mapped once, kept."""
        if self._views is None:
            # Asked first, so that an unmappable buffer is not copied to the host just to find out.
            if not all(b._is_mappable() for b in self.buffers):
                self._views = []
            else:
                views = [b.to_host() for b in self.buffers]
                mapped = all(b.is_host_accessible and v.flags.writeable for b, v in zip(self.buffers, views))
                self._views = views if mapped else []
        return self._views or None

    def write(self, slot: int, parts: list[np.ndarray]) -> bool:
        """Put `parts` (each [2, L, Hkv, n_i, D], consecutive) at positions 0.. of row `slot`
        with host copies into the mapped buffers, cast to the cache's dtype as `astype` casts: no
        device call (in a new process the first one also wakes IREE's task workers) and no
        staging copy of the whole prefix. False (nothing written) where the buffers cannot be
        mapped or map to another numpy type; call store_kv then. The caller holds the lock that
        orders device calls: none may run meanwhile."""
        views = self.host_views()
        if views is None or views[0].dtype != self.dtype:  # another mapping of the element type (bf16?)
            return False
        for i, view in enumerate(views):
            start = 0
            for p in parts:
                n = p.shape[3]
                view[slot, :, start : start + n] = p[i % 2, i // 2]
                start += n
        return True

    def read(self, slot: int, length: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Host copies of row `slot`'s positions start..length-1: k, v [L, 1, Hkv, length - start, D]."""
        rows = [np.array(b.to_host()[slot : slot + 1, :, start:length]) for b in self.buffers]
        return np.stack(rows[0::2]), np.stack(rows[1::2])
