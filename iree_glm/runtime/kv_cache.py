"""The KV cache on the device: one (k, v) pair of buffers per layer, [rows, kv_heads, capacity, head_dim].

A request owns one row (its slot). The compiled functions write new entries into the
buffers in place (see iree_glm/export.py) and read only the first n positions, n given by
the length of their `key_positions` input; `attended_keys` picks n for a step: every position
in use, rounded up to `KEY_GRANULARITY` so the compiled code sees tile-friendly sizes.
Positions beyond what a row has written hold zeros or an earlier request's (finite) entries;
attention masks them, but they must be finite (a masked score's weight is 0, and 0 x NaN is NaN).

A cache also records, per row, how many positions have been written (`written`, set before each
device call by `use`); a plan switch between decode devices (`move_to`) copies only those
positions of the rows in use, and zeroes the rest lazily: a row's positions are zeroed up to
what a call reads just before that call (`use`), so a switch after N tokens costs O(N) bytes,
not the whole buffers.

A move may keep the buffers it leaves (`move_to(keep=True)`; the session keeps a CPU device's,
within `Session.kv_keep_bytes`): a new local-task buffer costs by its size, not by what is
copied into it (IREE's local allocator hands out zeroed memory, and glibc zeroes a large block
it reuses from freed heap memory with a memset: docs/phases.md), so moving back into the kept buffers instead copies only the positions
written since the move (`use` lowers, per row, how far the kept copy is still current).
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
class KeptBuffers:
    """A device's buffers a move left, kept so that a move back copies only what changed since."""

    device: object
    buffers: list
    finite: np.ndarray | None  # KVCache._finite of these buffers
    current: np.ndarray  # per row: positions 0.. still equal to the live cache's
    nbytes: int  # what keeping them costs (each row at full capacity)


@dataclass
class KVCache:
    """Device buffers k_0, v_0, k_1, v_1, ... (the order the functions take them), `rows` rows each."""

    buffers: list
    rows: int
    dtype: np.dtype = np.dtype(np.float32)  # the element type; parts are cast to it as astype would
    _views: list | None = field(default=None, repr=False)  # host_views' answer, once known
    device: object = field(default=None, repr=False)  # the HAL device the buffers live on
    device_name: str = ""  # its name in the bundle's plans (reports)
    written: np.ndarray | None = field(default=None, repr=False)  # per row: positions written (zeros() sets it)
    _finite: np.ndarray | None = field(default=None, repr=False)  # per row: positions 0.. known finite (None: all)
    kept: KeptBuffers | None = field(default=None, repr=False)  # the buffers a move left, if it kept them

    @classmethod
    def zeros(cls, device, layers: int, rows: int, kv_heads: int, capacity: int, head_dim: int, dtype=np.float32,
              upload=None) -> "KVCache":
        """`upload`: host array -> device array, where the buffers need particular memory."""
        import iree.runtime as rt

        zeros = np.zeros((rows, kv_heads, capacity, head_dim), dtype)
        put = upload or (lambda a: rt.asdevicearray(device, a))
        return cls([put(zeros) for _ in range(2 * layers)], rows, np.dtype(dtype), device=device,
                   written=np.zeros(rows, np.int64))

    @property
    def capacity(self) -> int:
        return int(self.buffers[0].shape[2])

    @property
    def nbytes(self) -> int:
        """Bytes of the live buffers (each row at full capacity)."""
        return sum(int(np.prod(b.shape)) for b in self.buffers) * self.dtype.itemsize

    @property
    def kept_bytes(self) -> int:
        """Bytes of the buffers a move kept on the device it left (0: none)."""
        return self.kept.nbytes if self.kept is not None else 0

    def use(self, slots: list[int], ends: list[int], keys: int, starts: list[int] | None = None) -> None:
        """Before a device call that writes row slots[i]'s positions starts[i] up to ends[i] - 1
        (starts unknown: from 0) and reads each row's first `keys` positions: record what is
        written, and zero what the call reads that a move left unset. The caller holds the lock
        that orders device calls."""
        capacity = self.capacity
        for slot, end in zip(slots, ends):
            self.written[slot] = max(int(self.written[slot]), min(end, capacity))
        if self.kept is not None:  # the kept copy is current only below what this call writes
            for i, slot in enumerate(slots):
                self.kept.current[slot] = min(int(self.kept.current[slot]), starts[i] if starts is not None else 0)
        if self._finite is None:
            return
        keys = min(keys, capacity)
        for slot in set(slots):
            first = int(self._finite[slot])
            if first < keys:
                for b in self.buffers:
                    b.to_host()[slot, :, first:keys] = 0  # the mapping move_to made
                self._finite[slot] = keys

    def release(self, slot: int) -> None:
        """Row `slot` holds no conversation any more: a move need not copy it."""
        self.written[slot] = 0

    def move_to(self, device, memory: tuple, keep: bool = False) -> int:
        """Put the buffers on `device` in place (a plan switch between decode devices); returns the
        bytes copied. Only each row's written positions are copied, one host copy per (buffer,
        row) from a mapping of the source (local-task memory is the process's; Vulkan caches are
        host-visible, see Session.new_cache) into a mapping of a new, uninitialised allocation
        (`memory`: its (memory type, usage), see `mappable_memory`); `use` zeroes the rest as
        calls come to read it. Where the buffers a move kept are on `device`, they are the target
        instead, and each row gets only the positions written since that move. `keep`: keep the
        buffers left here for a move back (else they are freed, and so are kept buffers of a
        third device). The caller holds the lock that orders device calls."""
        kept = self.kept if self.kept is not None and self.kept.device is device else None
        if kept is not None:
            targets, finite, first = kept.buffers, kept.finite, kept.current
        else:
            targets = [unset_array(device, b.shape, self.dtype, memory) for b in self.buffers]
            finite, first = self.written.copy(), np.zeros_like(self.written)
        live = [(row, int(first[row]), int(n)) for row, n in enumerate(self.written) if n > first[row]]
        copied = 0
        for b, target in zip(self.buffers, targets):
            source, view = b.to_host(), target.to_host()
            for row, lo, n in live:
                view[row, :, lo:n] = source[row, :, lo:n]
                copied += view[row, :, lo:n].nbytes
        if finite is not None:
            for row, _, n in live:
                finite[row] = max(int(finite[row]), n)
        left = KeptBuffers(self.device, self.buffers, self._finite, self.written.copy(), self.nbytes) if keep else None
        self.buffers, self._views, self.device, self._finite, self.kept = targets, None, device, finite, left
        return copied

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


def mappable_memory(local: bool) -> tuple:
    """(memory type, usage) of a KV cache a plan switch can move by mapping: a local (CPU)
    device's own memory, or host-visible memory a Vulkan device reads in place."""
    import iree.runtime as rt

    memory = rt.MemoryType.DEVICE_LOCAL if local else rt.MemoryType.HOST_LOCAL | rt.MemoryType.DEVICE_VISIBLE
    return memory, rt.BufferUsage.DEFAULT | rt.BufferUsage.MAPPING


def unset_array(device, shape: tuple, dtype: np.dtype, memory: tuple):
    """A new device array, contents unset (written through its mapping by the caller)."""
    import iree.runtime as rt
    from iree.runtime.array_interop import map_dtype_to_element_type

    element = map_dtype_to_element_type(dtype)
    if element is None:
        raise ValueError(f"no IREE element type for a KV cache of {dtype}")
    size = int(np.prod(shape)) * dtype.itemsize
    buffer = device.allocator.allocate_buffer(memory_type=memory[0], allowed_usage=memory[1], allocation_size=size)
    return rt.DeviceArray(device, rt.HalBufferView(buffer, tuple(shape), element), override_dtype=dtype)
