"""Prefill on a phase-split plan's own devices, then hand the prompt's KV cache to the decode cache.

The prefill placement's stages (runtime/stages.py) keep a one-row scratch KV cache on their
devices. A prompt (each chunk of it, and after a prefix the prefix cache restored into the decode
row) is prefilled there; then the K/V of the positions it wrote move into the decode row with
the bundle's `store_kv`. Copies of the prompt's KV on CPU + lavapipe:

- the scratch cache lives in host-visible Vulkan memory, so reading it back is a mapping (no
  queue transfer; lavapipe's device memory is host memory);
- one host gather of the new positions into the [2, L, Hkv, P, D] array `store_kv` takes;
- `store_kv` on the CPU reads that host array in place (local-task imports host memory) and
  writes it into the decode row: one copy.

A prompt that starts after a restored prefix first needs that prefix in the scratch cache:
it is read from the decode row and uploaded (the one case where KV goes the other way).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from iree_glm.bundle.kv_layout import STORE_KV
from iree_glm.runtime.kv_cache import KVCache
from iree_glm.runtime.stages import StageRunner


@dataclass
class HandoffStats:
    """Where a phase split's time went (for reports and the tools/ benchmark)."""

    prefill_seconds: float = 0.0  # calls on the prefill devices
    handoff_seconds: float = 0.0  # KV read back, gathered and stored into the decode row
    prefix_upload_seconds: float = 0.0  # a restored prefix copied into the scratch cache
    handoff_bytes: int = 0


class PrefillPlacement:
    """A plan's prefill stages and their scratch KV cache; `run` fills a decode row."""

    def __init__(self, runner: StageRunner, cfg, capacity: int):
        self.runner = runner
        self.capacity = capacity
        self.cfg = cfg
        self.layers = [layer for info in runner.entries for layer in info.cache_layers]  # scratch buffer order
        self.scratch = runner.new_cache(cfg, 1, capacity, mappable=True)
        self.stats = HandoffStats()

    def _upload_prefix(self, k: np.ndarray, v: np.ndarray) -> None:
        """Put positions 0..P-1 (k, v: [L, 1, Hkv, P, D] in layer order) into the scratch cache."""
        import iree.runtime as rt

        cfg, at = self.cfg, 0
        for stage, cache in zip(self.runner.stages, self.scratch):
            put = stage.upload or (lambda a, d=stage.device_handle: rt.asdevicearray(d, a))
            for j in range(stage.cache_layers):
                for n, src in enumerate((k, v)):
                    row = np.zeros((1, cfg.num_kv_heads, self.capacity, cfg.head_dim), np.float32)
                    row[:, :, : src.shape[3]] = src[self.layers[at]]
                    cache.buffers[2 * j + n] = put(row)
                at += 1

    def _gather(self, first: int, end: int) -> np.ndarray:
        """The scratch row's positions first..end-1 as [2, L, Hkv, P, D], layers in model order."""
        kv = np.empty((2, self.cfg.num_layers, self.cfg.num_kv_heads, end - first, self.cfg.head_dim), np.float32)
        at = 0
        for cache in self.scratch:
            for j in range(len(cache.buffers) // 2):
                layer = self.layers[at]
                kv[0, layer] = cache.buffers[2 * j].to_host()[0, :, first:end]
                kv[1, layer] = cache.buffers[2 * j + 1].to_host()[0, :, first:end]
                at += 1
        return kv

    def run(self, session, pieces: list[tuple[int, int]], ids: list[int], start: int, cache: KVCache, slot: int) -> np.ndarray:
        """Prefill `ids` (positions start..) in `pieces` ([first, end) chunks of ids) on the
        prefill devices, then store their KV into row `slot` of the decode `cache`; the last
        position's logits. Holds the session's device lock throughout (the scratch row is one)."""
        with session._lock:
            if start:
                t = time.perf_counter()
                self._upload_prefix(*cache.read(slot, start))
                self.stats.prefix_upload_seconds += time.perf_counter() - t
            t = time.perf_counter()
            for first, end in pieces:
                logits = self.runner.step("prefill", np.asarray([ids[first:end]], np.int64), np.asarray([start + first], np.int64),
                                          np.zeros(1, np.int64), session._attended(start + end - 1), self.scratch)
            logits = np.array(logits[0])
            t1 = time.perf_counter()
            kv = self._gather(start, start + len(ids))
            session._ready(cache, [slot], [start + len(ids)], start + len(ids))
            session._fns[STORE_KV](np.asarray([slot], np.int64), np.asarray([start], np.int64), kv, *cache.buffers)
            self.stats.prefill_seconds += t1 - t
            self.stats.handoff_seconds += time.perf_counter() - t1
            self.stats.handoff_bytes += kv.nbytes
        return logits
