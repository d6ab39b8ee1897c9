"""Run a multi-device bundle: one module per plan stage, each loaded on its own HAL device.

A token step runs the stages in order. Each stage keeps the KV cache of its own layers on its
device (a `KVCache` per stage, updated in place by the stage's functions); only the hidden
state ([B, S, hidden]) and the final logits cross devices, through the host: the producing
device's output is mapped (Vulkan modules are compiled with mappable outputs) and the next
device reads it from host-visible memory written without a queue operation (see
`host_visible_upload`). IREE 3.13 cannot run Vulkan and CPU inside one module (see the IREE
notes), which is why each device gets a module and a context of its own.

A stage meant for a device whose driver is absent here (an NPU) was compiled as a CPU
stand-in. It runs only with `allow_stand_in`, and `stand_ins` says which ran where.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iree_glm.bundle.manifest import Manifest, StageEntry, read_manifest
from iree_glm.errors import BundleError, RequestError
from iree_glm.bundle.tokenizer import TextTokenizer
from iree_glm.runtime.batching import DEFAULT_GATHER_MS
from iree_glm.runtime.constrained import ConstraintFactory
from iree_glm.runtime.module_check import module_problem
from iree_glm.runtime.devices import DeviceFailure, check_cpu, first_line, hal_device, load_module, load_retrying
from iree_glm.runtime.kv_cache import KVCache, key_positions
from iree_glm.bundle.kv_layout import attended_keys
from iree_glm.runtime.request import RequestState
from iree_glm.runtime.session import Session, chunk_size


@dataclass
class _Stage:
    index: int
    device: str  # device name in the profile
    driver: str  # driver it runs on here
    cache_layers: int
    fns: dict
    device_handle: object  # the HAL device its caches live on
    upload: object = None  # host array -> device array for the call (None: the call imports host arrays)
    seconds: float = 0.0  # time in this stage's calls (for reports)


@dataclass
class PipelineStats:
    """Where the time of the calls so far went."""

    stage_seconds: dict[str, float] = field(default_factory=dict)
    handoff_seconds: float = 0.0


def is_multi_device(manifest: Manifest) -> bool:
    return manifest.options.stages is not None


def host_visible_upload(device):
    """Host array -> device array in host-visible memory the device reads directly. A plain
    upload to a Vulkan device is a queue transfer and a wait per input (one round trip to the
    driver's queue: ~20 ms for lavapipe on a loaded machine, measured); a mappable buffer is
    written with a memcpy. Local (CPU) devices import host arrays already."""
    import iree.runtime as rt

    memory = rt.MemoryType.HOST_LOCAL | rt.MemoryType.DEVICE_VISIBLE
    usage = rt.BufferUsage.DEFAULT | rt.BufferUsage.MAPPING
    return lambda a: rt.asdevicearray(device, a, memory_type=memory, allowed_usage=usage)


class PipelineSession(Session):
    """A `Session` over several devices; same request API (generate, stream), no batching engine."""

    def __init__(self, bundle: Path, manifest: Manifest, allow_stand_in: bool = False, prefill_chunk: int | None = None):
        import iree.runtime as rt

        from iree_glm.runtime.devices import driver_available

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
        self.stand_ins: dict[str, str] = {}  # device -> driver it runs on instead
        self.draft = None  # no speculative decoding across a pipeline's stages (no verify entry point)
        self.stats = PipelineStats()

        self._instance = rt.VmInstance()
        self._index = rt.ParameterIndex()
        self._index.load(str(self.bundle / manifest.parameters))
        modules = {m.file: m for m in manifest.modules}
        for info in manifest.options.stages:
            name, wanted = info.device, info.device_driver
            if info.stand_in:
                if driver_available(wanted):
                    raise BundleError(f"{self.bundle}: device '{name}' has driver '{wanted}' here but the bundle holds a CPU stand-in for it; recompile")
                if not info.allow_stand_in:
                    raise BundleError(f"{self.bundle}: device '{name}' needs HAL driver '{wanted}', which this machine does not have, and its profile does not allow a stand-in")
                if not allow_stand_in:
                    raise BundleError(f"{self.bundle}: device '{name}' needs HAL driver '{wanted}', which this machine does not have; "
                                      f"rerun with --allow-stand-in to run its partition on the CPU (marked stand-in)")
                self.stand_ins[name] = modules[info.file].driver
            self.stats.stage_seconds[name] = 0.0
        self._stages = load_retrying(lambda: self._load_stages(modules), str(self.bundle))

    def _load_stages(self, modules: dict) -> list["_Stage"]:
        """Every stage, loaded afresh (if a device is lost, earlier stages may hold it too)."""
        stages, error = [], None
        for info in self.manifest.options.stages:
            try:
                stages.append(self._load_stage(info, modules[info.file]))
            except Exception as e:  # noqa: BLE001 (re-raised below)
                error = e
                break
        if error is not None:
            # Free the loaded stages' modules first: IREE's binding fails (SystemError) when a
            # mmapped module is freed while an exception unwinds.
            stages.clear()
            raise error
        return stages

    def _load_stage(self, info: StageEntry, module) -> "_Stage":
        """A stage's module on a device of its driver (raises `DeviceLost` when that device is lost
        while its initializers upload the weights)."""
        import iree.runtime as rt

        try:
            device = hal_device(module.driver)
        except (ValueError, RuntimeError) as e:
            raise BundleError(f"{self.bundle}: device '{info.device}' needs HAL driver '{module.driver}', not available here ({e})") from None
        provider = self._index.create_provider(scope=self.manifest.parameter_scope)
        main, context = load_module(self._instance, module.driver, device, provider, str(self.bundle / module.file))
        last = info.index == len(self.manifest.options.stages) - 1
        problem = module_problem(self.bundle, self.manifest, main, module.file, cache_layers=len(info.cache_layers),
                                 logits=last, store_kv=False, sliding_window=False)
        if problem:
            del main, context  # before raising: see devices.load_module
            raise BundleError(problem)
        fns = {ep.name: rt.FunctionInvoker(context, device, main.lookup_function(ep.name)) for ep in self.manifest.entry_points}
        upload = None if module.driver.startswith("local-") else host_visible_upload(device)
        return _Stage(info.index, info.device, module.driver, len(info.cache_layers), fns, device, upload)

    @classmethod
    def load(cls, bundle: str | Path, verify: bool = True, allow_stand_in: bool = False,
             prefill_chunk: int | None = None) -> "PipelineSession":
        return cls(Path(bundle), read_manifest(Path(bundle), verify=verify), allow_stand_in, prefill_chunk)

    @property
    def engine(self):
        raise RequestError(f"{self.bundle}: batched serving is not supported for multi-device bundles")

    def new_cache(self, rows: int = 1) -> list[KVCache]:
        """One zeroed KV cache per stage, on its device (no buffers for a stage without attention)."""
        cfg = self.config
        return [KVCache.zeros(st.device_handle, st.cache_layers, rows, cfg.num_kv_heads, self.max_context, cfg.head_dim)
                for st in self._stages]

    def _step(self, name: str, x: np.ndarray, start: np.ndarray, slots: np.ndarray, cache: list[KVCache]) -> np.ndarray:
        """Run every stage once; x is token ids, the result host logits."""
        keys = key_positions(attended_keys(int((start + x.shape[1] - 1).max()), self.max_context))
        for stage, stage_cache in zip(self._stages, cache):
            t = time.perf_counter()
            try:
                inputs = (x, start, slots, keys) if stage.upload is None else tuple(stage.upload(a) for a in (x, start, slots, keys))
                t1 = time.perf_counter()
                out = stage.fns[name](*inputs, *stage_cache.buffers)
                t2 = time.perf_counter()
                x = out.to_host()  # the hand-off: mapped from the producing device
            except (RuntimeError, ValueError) as e:  # a device failing mid-run: stop, never switch devices
                raise DeviceFailure(f"{self.bundle}: device '{stage.device}' ({stage.driver}) failed in {name}: {first_line(e)}") from None
            self.stats.handoff_seconds += (t1 - t) + time.perf_counter() - t2
            self.stats.stage_seconds[stage.device] += t2 - t1
        return x

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
        name = "decode" if len(tokens) == 1 else f"decode_b{len(tokens)}"
        slots = list(range(len(tokens))) if slots is None else slots
        with self._lock:
            logits = self._step(name, np.asarray(tokens, np.int64)[:, None], np.asarray(positions, np.int64),
                                np.asarray(slots, np.int64), cache)
            return np.array(logits)
