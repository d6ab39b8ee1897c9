"""A bundle's plans at run time: which one prefills the next prompt, and switching between them.

Every plan of a bundle decodes on the same decode placement (compiler/phases.py), so a switch
moves no KV cache and costs no device work: it changes where the next prompt (or the next
chunk-less prefill of the batching engine) runs; a generation in progress keeps its decode row
and continues token for token. A switch can come between requests or between decode steps.

A plan whose prefill devices are missing here (no driver, a stand-in not allowed, a load that
failed) cannot be used: loading says so in one warning line and falls back to the next plan in
the bundle's order, ending with the one-placement plan, which needs only the decode devices.
A power budget no plan meets gets one warning line and the plan that draws least.
"""

from __future__ import annotations

import threading
import warnings

from iree_glm.bundle.manifest import PlanEntry
from iree_glm.errors import BundleError, RequestError
from iree_glm.runtime.devices import DeviceFailure, driver_available, first_line
from iree_glm.runtime.phase_split import PrefillPlacement
from iree_glm.runtime.stages import StageRunner


class PlanFallbackWarning(UserWarning):
    """A plan could not be used (missing device) or no plan met the power budget."""


class PlanSet:
    """The plans of a bundle with `options.plans`, their prefill placements loaded."""

    def __init__(self, session, allow_stand_in: bool = False, plan: str | None = None):
        self.bundle = session.bundle
        self.entries: dict[str, PlanEntry] = {p.name: p for p in session.manifest.options.plans}
        self.placements: dict[str, PrefillPlacement | None] = {}
        self.unavailable: dict[str, str] = {}  # plan -> why it cannot run here
        for entry in self.entries.values():
            try:
                self.placements[entry.name] = self._load(session, entry, allow_stand_in)
            except (BundleError, DeviceFailure) as e:
                self.unavailable[entry.name] = first_line(e)
        usable = [name for name in self.entries if name not in self.unavailable]
        if not usable:
            raise BundleError(f"{self.bundle}: no plan can run here ({'; '.join(self.unavailable.values())})")
        self._lock = threading.Lock()
        self.switches = 0
        first = next(iter(self.entries))
        if first in self.unavailable and plan is None:
            warnings.warn(f"plan '{first}' cannot run: {self.unavailable[first]}; using plan '{usable[0]}' "
                          f"(prefill on {self.prefill_where(usable[0])})", PlanFallbackWarning, stacklevel=3)
        self.current = usable[0]
        if plan is not None:
            self.use(plan)

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
        stages = self.entries[name].prefill_stages
        return ", ".join(dict.fromkeys(s.device for s in stages)) if stages else "the decode devices"

    def placement(self) -> PrefillPlacement | None:
        """The current plan's prefill placement (None: prefill on the decode placement)."""
        return self.placements[self.current]

    def use(self, name: str) -> str:
        """Switch to plan `name` (takes effect at the next prefill; decoding is unaffected)."""
        if name not in self.entries:
            raise RequestError(f"unknown plan '{name}' (this bundle has: {', '.join(self.entries)})")
        if name in self.unavailable:
            raise RequestError(f"plan '{name}' cannot run here: {self.unavailable[name]}")
        with self._lock:
            if name != self.current:
                self.current = name
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
                 "why_not": self.unavailable.get(e.name), "prefill_on": self.prefill_where(e.name), "power_w": e.power_w,
                 "ttft_ms_estimate": round(e.prefill_ms + e.handoff_ms, 3), "decode_ms_estimate": round(e.decode_ms, 3)}
                for e in self.entries.values()]
