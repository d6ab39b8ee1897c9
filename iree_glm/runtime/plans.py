"""A bundle's plans at run time: where the next prompt is prefilled and where decoding runs.

The phase-split and one-placement plans decode on the bundle's main module; switching between
them changes where the next prompt (or the next chunk-less prefill of the batching engine) runs.
A `decode-DEVICE` plan (compiler/phases.py) runs both phases on a module of its own: switching
to or from it makes the next device call of each live KV cache move that cache to the new
decode device (runtime/decoders.py). Either way a switch can come between requests or between
decode steps (the batching engine's next step is the boundary), and a generation in progress
continues token for token.

A plan whose devices are missing here (no driver, a stand-in not allowed, a load that failed)
cannot be used: loading says so in one warning line and falls back to the next plan in the
bundle's order, ending with the one-placement plan, which needs only the main module's device.
A power budget no plan meets gets one warning line and the plan that draws least.
"""

from __future__ import annotations

import warnings

from iree_glm.bundle.manifest import PlanEntry
from iree_glm.errors import BundleError, RequestError
from iree_glm.runtime.decoders import DecodeModule
from iree_glm.runtime.devices import DeviceFailure, driver_available, first_line, load_retrying
from iree_glm.runtime.phase_split import PrefillPlacement
from iree_glm.runtime.stages import StageRunner


class PlanFallbackWarning(UserWarning):
    """A plan could not be used (missing device) or no plan met the power budget."""


class PlanSet:
    """The plans of a bundle with `options.plans`, their prefill placements loaded."""

    def __init__(self, session, allow_stand_in: bool = False, plan: str | None = None):
        self.bundle = session.bundle
        self._session = session
        self.entries: dict[str, PlanEntry] = {p.name: p for p in session.manifest.options.plans}
        self.placements: dict[str, PrefillPlacement | None] = {}
        self.decoders: dict[str, DecodeModule] = {}  # plan -> the module it decodes on
        self.unavailable: dict[str, str] = {}  # plan -> why it cannot run here
        for entry in self.entries.values():
            try:
                self.decoders[entry.name] = self._decoder(session, entry)
                self.placements[entry.name] = self._load(session, entry, allow_stand_in)
            except (BundleError, DeviceFailure) as e:
                self.unavailable[entry.name] = first_line(e)
        usable = [name for name in self.entries if name not in self.unavailable]
        if not usable:
            raise BundleError(f"{self.bundle}: no plan can run here ({'; '.join(self.unavailable.values())})")
        self.switches = 0
        first = next(iter(self.entries))
        if first in self.unavailable and plan is None:
            warnings.warn(f"plan '{first}' cannot run: {self.unavailable[first]}; using plan '{usable[0]}' "
                          f"(prefill on {self.prefill_where(usable[0])})", PlanFallbackWarning, stacklevel=3)
        self.current = usable[0]
        session._decoder = self.decoders[self.current]  # no device call yet: nothing to order
        if plan is not None:
            self.use(plan)

    @staticmethod
    def _decoder(session, entry: PlanEntry) -> DecodeModule:
        """The module `entry` decodes on, loaded (the main module unless it has its own)."""
        if entry.decode_module is None:
            return session._main
        module = next((m for m in session.manifest.modules if m.file == entry.decode_module), None)
        if module is None:
            raise BundleError(f"{session.bundle}: plan '{entry.name}': decode module '{entry.decode_module}' is not one of "
                              "the bundle's modules (recompile the bundle)")
        if not driver_available(module.driver):
            raise BundleError(f"{session.bundle}: decodes on '{entry.decode_device}', whose HAL driver '{module.driver}' "
                              "is not available here")
        return load_retrying(lambda: session.load_decode_module(module.file, module.driver, entry.decode_device or module.file),
                             str(session.bundle))

    @staticmethod
    def _load(session, entry: PlanEntry, allow_stand_in: bool) -> PrefillPlacement | None:
        if not entry.prefill_stages:
            return None
        layers = sorted(layer for info in entry.prefill_stages for layer in info.cache_layers)
        if layers != list(range(session.config.num_layers)):
            raise BundleError(f"{session.bundle}: plan '{entry.name}': its prefill stages' cache_layers {layers} are not "
                              f"each of the model's {session.config.num_layers} layers once (recompile the bundle)")
        for info in entry.prefill_stages:
            if not info.stand_in and not driver_available(info.device_driver):
                raise BundleError(f"{session.bundle}: prefills on '{info.device}', whose HAL driver '{info.device_driver}' is not available here")
        runner = StageRunner(session.bundle, session.manifest, entry.prefill_stages, ("prefill",), session._instance,
                             session._index, allow_stand_in)
        return PrefillPlacement(runner, session.config, session.manifest.options.kv_cache_slots)

    def prefill_where(self, name: str) -> str:
        entry = self.entries[name]
        if entry.prefill_stages:
            return ", ".join(dict.fromkeys(s.device for s in entry.prefill_stages))
        return entry.decode_device or "the decode devices"

    def decode_where(self, name: str) -> str:
        return self.entries[name].decode_device or "the main module's device"

    def placement(self) -> PrefillPlacement | None:
        """The current plan's prefill placement (None: prefill on the decode placement)."""
        return self.placements[self.current]

    def use(self, name: str) -> str:
        """Switch to plan `name`: the next prefill runs where it says, and the next device call
        of each KV cache moves it to the plan's decode device if that differs."""
        if name not in self.entries:
            raise RequestError(f"unknown plan '{name}' (this bundle has: {', '.join(self.entries)})")
        if name in self.unavailable:
            raise RequestError(f"plan '{name}' cannot run here: {self.unavailable[name]}")
        with self._session._lock:  # between device calls: a step boundary
            if name != self.current:
                self.current = name
                self._session._decoder = self.decoders[name]
                self.switches += 1
        return name

    def for_power_budget(self, watts: float) -> tuple[str, str | None]:
        """(plan, note): the plan with the fastest first token among those estimated to draw at
        most `watts`, note None; if none does, the one drawing least and a one-line note saying so."""
        if isinstance(watts, bool) or not isinstance(watts, (int, float)) or not watts >= 0:
            raise RequestError(f"a power budget is a number of watts >= 0 (got {watts!r})")
        usable = [e for name, e in self.entries.items() if name not in self.unavailable]
        fitting = [e for e in usable if e.power_w <= watts]
        if fitting:
            return min(fitting, key=lambda e: (e.prefill_ms + e.handoff_ms, e.decode_ms)).name, None
        least = min(usable, key=lambda e: e.power_w)
        return least.name, (f"no plan of {self.bundle} meets a {watts:g} W budget: using plan '{least.name}', the "
                            f"least-drawing ({least.power_w:g} W estimated)")

    def describe(self) -> list[dict]:
        """Each plan: name, whether it is in use or can run, and its estimates (for serve's admin endpoint)."""
        return [{"name": e.name, "current": e.name == self.current, "available": e.name not in self.unavailable,
                 "why_not": self.unavailable.get(e.name), "prefill_on": self.prefill_where(e.name),
                 "decode_on": self.decode_where(e.name), "power_w": e.power_w,
                 "ttft_ms_estimate": round(e.prefill_ms + e.handoff_ms, 3), "decode_ms_estimate": round(e.decode_ms, 3)}
                for e in self.entries.values()]
