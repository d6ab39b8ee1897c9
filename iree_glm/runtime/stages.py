"""Stage modules of one placement, each loaded on its own HAL device and run in order.

Each stage keeps the KV cache of its own layers on its device (a `KVCache` per stage, updated
in place by the stage's functions); only the hidden state ([B, S, hidden]) and the final logits
cross devices, through the host: the producing device's output is mapped (Vulkan modules are
compiled with mappable outputs) and the next device reads it from host-visible memory written
without a queue operation (see `host_visible_upload`). IREE 3.13 cannot run Vulkan and CPU
inside one module (see the IREE notes), which is why each device gets a module and a context of
its own. A placement is a multi-device bundle's (runtime/pipeline.py) or a phase-split plan's
prefill placement (runtime/phase_split.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iree_glm.bundle.manifest import Manifest, StageEntry
from iree_glm.errors import BundleError
from iree_glm.runtime.devices import DeviceFailure, driver_available, first_line, hal_device, load_module, load_retrying
from iree_glm.runtime.kv_cache import KVCache
from iree_glm.runtime.module_check import module_problem


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


def host_visible_upload(device):
    """Host array -> device array in host-visible memory the device reads directly. A plain
    upload to a Vulkan device is a queue transfer and a wait per input (one round trip to the
    driver's queue: ~20 ms for lavapipe on a loaded machine, measured); a mappable buffer is
    written with a memcpy. Local (CPU) devices import host arrays already."""
    import iree.runtime as rt

    memory = rt.MemoryType.HOST_LOCAL | rt.MemoryType.DEVICE_VISIBLE
    usage = rt.BufferUsage.DEFAULT | rt.BufferUsage.MAPPING
    return lambda a: rt.asdevicearray(device, a, memory_type=memory, allowed_usage=usage)


class StageRunner:
    """Stage modules loaded on their devices and run in order: a multi-device bundle's decode
    placement, or a plan's prefill placement (`names`: the entry points its modules have)."""

    def __init__(self, bundle: Path, manifest: Manifest, entries: list[StageEntry], names: tuple[str, ...], instance, index,
                 allow_stand_in: bool = False):
        self.bundle, self.manifest, self.entries, self.names = bundle, manifest, entries, names
        self._instance, self._index = instance, index
        self.stand_ins: dict[str, str] = {}  # device -> driver it runs on instead
        self.stats = PipelineStats()
        modules = {m.file: m for m in manifest.modules}
        for info in entries:
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
        self.stages = load_retrying(lambda: self._load_stages(modules), str(self.bundle))

    def _load_stages(self, modules: dict) -> list["_Stage"]:
        """Every stage, loaded afresh (if a device is lost, earlier stages may hold it too)."""
        stages, error = [], None
        for info in self.entries:
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
        last = info.index == len(self.entries) - 1
        problem = module_problem(self.bundle, self.manifest, main, module.file, cache_layers=len(info.cache_layers),
                                 logits=last, store_kv=False, sliding_window=False, only=self.names)
        if problem:
            del main, context  # before raising: see devices.load_module
            raise BundleError(problem)
        fns = {name: rt.FunctionInvoker(context, device, main.lookup_function(name)) for name in self.names}
        upload = None if module.driver.startswith("local-") else host_visible_upload(device)
        return _Stage(info.index, info.device, module.driver, len(info.cache_layers), fns, device, upload)

    def new_cache(self, cfg, rows: int, capacity: int, mappable: bool = False) -> list[KVCache]:
        """One zeroed KV cache per stage, on its device (no buffers for a stage without attention).
        `mappable`: in host-visible memory where the device has its own (read back by a mapping)."""
        return [KVCache.zeros(st.device_handle, st.cache_layers, rows, cfg.num_kv_heads, capacity, cfg.head_dim,
                              upload=st.upload if mappable else None)
                for st in self.stages]

    def step(self, name: str, x: np.ndarray, start: np.ndarray, slots: np.ndarray, keys: np.ndarray,
             cache: list[KVCache]) -> np.ndarray:
        """Run every stage once; x is token ids, the result host logits."""
        for stage, stage_cache in zip(self.stages, cache):
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
