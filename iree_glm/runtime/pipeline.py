"""Run a multi-device bundle: one module per plan stage, each loaded on its own HAL device.

A token step runs the stages in order (runtime/stages.py: each stage keeps the KV cache of its
own layers; hidden states cross devices through the host).

A stage meant for a device whose driver is absent here (an NPU) was compiled as a CPU
stand-in. It runs only with `allow_stand_in`, and `stand_ins` says which ran where.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from iree_glm.bundle.manifest import Manifest, decode_name, read_manifest
from iree_glm.errors import RequestError
from iree_glm.bundle.tokenizer import TextTokenizer
from iree_glm.runtime.batching import DEFAULT_GATHER_MS
from iree_glm.runtime.constrained import ConstraintFactory
from iree_glm.runtime.devices import DeviceFailure, check_cpu, load_parameters  # noqa: F401 (DeviceFailure: raised by the stages)
from iree_glm.runtime.kv_cache import KVCache, key_positions
from iree_glm.runtime.stages import StageRunner, _Stage
from iree_glm.bundle.kv_layout import attended_keys
from iree_glm.runtime.request import RequestState
from iree_glm.runtime.session import Session, chunk_size


def is_multi_device(manifest: Manifest) -> bool:
    return manifest.options.stages is not None


class PipelineSession(Session):
    """A `Session` over several devices; same request API (generate, stream), no batching engine."""

    # Plain attributes here, not Session's properties over its one decode module: a pipeline's
    # functions live in its stages, and it has no verify entry point to decode exactly with.
    _fns: dict = {}
    exact_verify_rows = 0

    def __init__(self, bundle: Path, manifest: Manifest, allow_stand_in: bool = False, prefill_chunk: int | None = None):
        import iree.runtime as rt

        # What Session's request code reads (Session.__init__ loads one module on one device).
        self.bundle = Path(bundle)
        self.manifest = manifest
        check_cpu(self.bundle, manifest)
        self.config = manifest.model
        self.max_context = manifest.max_context
        self.prefill_chunk = chunk_size(prefill_chunk, manifest)
        self.sliding_window = None  # multi-device bundles have no sparse attention
        self._lock = threading.Lock()
        self.tokenizer = TextTokenizer(self.bundle / manifest.tokenizer) if manifest.tokenizer else None
        self.normalizer = None
        self.constraints = ConstraintFactory(
            self.bundle / manifest.tokenizer if manifest.tokenizer else None, self.config.vocab_size, tuple(self.config.eos_token_ids))
        self.prefix_cache = None
        self.gather_ms = DEFAULT_GATHER_MS
        self._engine = None
        self._engine_lock = threading.Lock()
        self._fns = {ep.name: None for ep in manifest.entry_points}
        self.draft = None  # no speculative decoding across a pipeline's stages (no verify entry point)
        self.forced_tokens = False  # nor checks of a grammar's forced tokens
        self.plans = None  # one plan: a phase split needs a one-module decode placement (compiler/phases.py)

        self._instance = rt.VmInstance()
        self._index = load_parameters(self.bundle / manifest.parameters)
        names = tuple(ep.name for ep in manifest.entry_points)
        self._runner = StageRunner(self.bundle, manifest, manifest.options.stages, names, self._instance, self._index, allow_stand_in)
        self.stand_ins = self._runner.stand_ins
        self.stats = self._runner.stats

    @property
    def _stages(self) -> list[_Stage]:
        return self._runner.stages

    @classmethod
    def load(cls, bundle: str | Path, verify: bool = True, allow_stand_in: bool = False,
             prefill_chunk: int | None = None) -> "PipelineSession":
        return cls(Path(bundle), read_manifest(Path(bundle), verify=verify), allow_stand_in, prefill_chunk)

    @property
    def engine(self):
        raise RequestError(f"{self.bundle}: batched serving is not supported for multi-device bundles")

    def new_cache(self, rows: int = 1) -> list[KVCache]:
        return self._runner.new_cache(self.config, rows, self.max_context)

    def _step(self, name: str, x: np.ndarray, start: np.ndarray, slots: np.ndarray, cache: list[KVCache]) -> np.ndarray:
        keys = key_positions(attended_keys(int((start + x.shape[1] - 1).max()), self.max_context))
        return self._runner.step(name, x, start, slots, keys, cache)

    def _prefill_call(self, ids: list[int], start: int, cache: list[KVCache], slot: int) -> np.ndarray:
        with self._lock:
            logits = self._step("prefill", np.asarray([ids], np.int64), np.asarray([start], np.int64),
                                np.asarray([slot], np.int64), cache)
            return np.array(logits[0])

    def prefill(self, state: RequestState, cache: list[KVCache], slot: int = 0) -> np.ndarray:
        logits = self.run_prefill(state.ids, 0, cache, slot)
        state.cached_tokens = 0
        state.pos = len(state.ids)
        return logits

    def decode(self, tokens: list[int], positions: list[int], cache: list[KVCache], slots: list[int] | None = None) -> np.ndarray:
        name = decode_name(len(tokens))
        slots = list(range(len(tokens))) if slots is None else slots
        with self._lock:
            logits = self._step(name, np.asarray(tokens, np.int64)[:, None], np.asarray(positions, np.int64),
                                np.asarray(slots, np.int64), cache)
            return np.array(logits)
