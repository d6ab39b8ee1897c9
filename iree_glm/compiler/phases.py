"""A bundle's plans: the phase plan's prefill stages, and the plans the runtime may switch between.

Every plan decodes on the bundle's decode placement (the single plan); a phase-split plan
also carries the prefill placement's stage modules (prefill entry point only), so the runtime
can prefill where compute is and decode where bandwidth is. The bundle keeps the one-placement
plan beside it: it needs no other device and draws less power, so the runtime can fall back to
it when a device is missing or switch to it when the power budget drops.
"""

from __future__ import annotations

from iree_glm.bundle.manifest import PlanEntry, StageEntry
from iree_glm.export.stages import StageSpec
from iree_glm.planner.phases import PhasePlan
from iree_glm.planner.profile import Profile

SPLIT, ONE = "phase-split", "one-placement"
PREFILL_PREFIX = "prefill-"  # the prefill stages' module files


def prefill_specs(pp: PhasePlan) -> list[StageSpec]:
    """The prefill placement's consecutive runs of parts on one device, as stages."""
    names = [p.part for p in pp.decode.parts]
    specs: list[StageSpec] = []
    first = 0
    for i in range(1, len(names) + 1):
        if i == len(names) or pp.prefill_devices[i] != pp.prefill_devices[first]:
            specs.append(StageSpec(len(specs), pp.prefill_devices[first], tuple(names[first:i])))
            first = i
    return specs


def why_not_run(pp: PhasePlan, multi_device_decode: bool, dtype: str, sparse: bool) -> str | None:
    """Why a bundle cannot carry the phase split the planner chose (None: it can, or there is none)."""
    if not pp.split:
        return None
    if multi_device_decode:
        return "running a phase split whose decode placement spans several devices is not built; one placement"
    if dtype != "f32":
        return f"prefill stages are f32 only (activation dtype {dtype}); one placement"
    if sparse:
        return "prefill stages have no sparse attention; one placement"
    return None


def phase_power(profile: Profile, devices: set[str]) -> float:
    """Estimated draw while `devices` work: theirs active, the others idle."""
    return sum(d.active_power_w if d.name in devices else d.idle_power_w for d in profile.devices)


def plan_entries(pp: PhasePlan, profile: Profile, prefill_stages: list[StageEntry] | None) -> list[PlanEntry]:
    """The bundle's plans, the default first: the phase split (when built), then one placement."""
    decode_devices = set(p.device for p in pp.decode.parts)
    decode_w = phase_power(profile, decode_devices)
    one = PlanEntry(ONE, None, decode_w, pp.single_prefill_ms, 0.0, pp.decode.latency_ms, pp.prompt_tokens,
                    ["prefill and decode on the decode placement"])
    if not prefill_stages:
        return [one]
    split_w = max(decode_w, phase_power(profile, set(pp.prefill_devices)))
    split = PlanEntry(SPLIT, prefill_stages, split_w, pp.prefill_ms, pp.handoff_ms, pp.decode.latency_ms, pp.prompt_tokens,
                      list(pp.reasons))
    return [split, one]
