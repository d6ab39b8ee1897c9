"""Plans per phase: prefill where compute is, decode where bandwidth is.

A prompt is processed in one compute-bound call of many rows; each generated token is a
bandwidth- and call-overhead-bound call of one row. Which processor wins each phase depends on
the model and the device, so the scheduler places each phase on its own: the decode placement is
the single plan's (`plan_partition`, power budget and all), the prefill placement minimises the
prompt's time. Splitting costs two things the cost model counts: the KV cache the prompt wrote
must reach the decode devices (per attention layer placed differently: its bytes over the link,
nothing where the devices share memory), and weights both phases need on different devices live
twice (unless the devices share memory). The split is kept only where the estimated time to
first token (prefill + hand-off) beats the single plan's; decode is the single plan's, so it
never gets slower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from iree_glm.bundle.kv_layout import attended_keys
from iree_glm.bundle.model_config import ModelConfig
from iree_glm.planner.profile import Profile
from iree_glm.planner.scheduler import GB, PartitionPlan, _Problem, _Weights, model_parts, plan_partition, transfer_seconds

PROMPT_TOKENS = 512  # the prompt length phase plans optimise for
# A split costs a second set of modules and a KV hand-off at run time: below this estimated
# gain in time to first token, one placement serves both phases.
MIN_GAIN = 1.05


@dataclass
class PhasePlan:
    """Where each part runs in each phase, and what the split costs and gains (estimates)."""

    profile: str
    prompt_tokens: int
    decode: PartitionPlan  # the single plan: decode placement, per-token estimates
    prefill_devices: list[str]  # device per part for the prompt (== the decode devices when not split)
    split: bool
    prefill_ms: float  # the prompt on the prefill devices
    handoff_ms: float  # moving the prompt's KV cache to the decode devices
    handoff_bytes: float
    single_prefill_ms: float  # the prompt on the decode devices (no split)
    memory_gb: dict[str, float]  # resident per device with both phases' weights
    reasons: list[str] = field(default_factory=list)
    decode_options: list["DecodeOption"] = field(default_factory=list)  # other decode devices worth carrying

    @property
    def ttft_ms(self) -> float:
        """Estimated time to first token: prefill plus hand-off."""
        return self.prefill_ms + self.handoff_ms

    @property
    def speedup(self) -> float:
        return self.single_prefill_ms / self.ttft_ms if self.ttft_ms else 1.0


@dataclass
class DecodeOption:
    """The whole model on one other device, for both phases: a plan the runtime can switch to
    (moving the live KV cache), kept where it decodes faster or draws less than the decode plan."""

    device: str
    decode_ms: float  # per token
    prefill_ms: float  # the prompt on that device
    power_w: float  # draw while it works (the others idle)
    why: str


def phase_power(profile: Profile, devices: set[str]) -> float:
    """Estimated draw while `devices` work: theirs active, the others idle."""
    return sum(d.active_power_w if d.name in devices else d.idle_power_w for d in profile.devices)


def decode_options(profile: Profile, pb: _Problem, decode: list[str], tokens: int) -> list[DecodeOption]:
    """One-device placements other than the decode plan's devices that no other candidate beats on
    both decode time and power: a faster plan for an unconstrained budget, or a power-saving one
    for a tight budget (a phone that heats up). A device that cannot run every part or hold the
    weights (beside the decode plan's, unless memory is shared) is no candidate."""
    total = sum(p.resident_bytes for p in pb.parts)
    main = (pb.evaluate(decode)[0], phase_power(profile, set(decode)))
    cands = []
    for d in profile.devices:
        if {d.name} == set(decode) or not all(pb.can_run(p, d) for p in pb.parts):
            continue
        # Both decode modules stay loaded (a switch is then a KV move, not a load): their weights
        # count twice in a pool the devices share.
        shares = d.name != profile.host.name and all(_shares(profile, d.name, e) for e in set(decode))
        if total > pb.caps[d.name] or (shares and 2 * total > pb.caps[d.name]):
            continue
        one = [d.name] * len(pb.parts)
        cands.append((pb.evaluate(one)[0], phase_power(profile, {d.name}), d.name, pb.evaluate(one, tokens=tokens)[0]))
    out = []
    for t, w, name, t_prefill in cands:
        rivals = [main] + [(t2, w2) for t2, w2, n2, _ in cands if n2 != name]
        if any(t2 <= t and w2 <= w and (t2, w2) != (t, w) for t2, w2 in rivals):
            continue
        why = (f"decodes faster ({t * 1e3:.2f} against {main[0] * 1e3:.2f} ms/token)" if t < main[0] else
               f"draws less ({w:.1f} against {main[1]:.1f} W) at {t * 1e3:.2f} ms/token")
        out.append(DecodeOption(name, t * 1e3, t_prefill * 1e3, w, f"everything on {name}: {why}"))
    return out


def _shares(profile: Profile, a: str, b: str) -> bool:
    link = profile.link(a, b)
    return a == b or (link is not None and link.shared_memory)


def _handoff(profile: Profile, parts, prefill: list[str], decode: list[str], tokens: int) -> tuple[float, float]:
    """(seconds, bytes) to move the prompt's KV cache from each attention layer's prefill device
    to its decode device; nothing where the two share memory."""
    seconds = nbytes = 0.0
    for part, a, b in zip(parts, prefill, decode):
        if part.kv_token_bytes == 0 or a == b:
            continue
        link = profile.link(a, b)
        if link is not None and link.shared_memory:
            continue
        size = part.kv_token_bytes * tokens
        seconds += transfer_seconds(profile, a, b, size)
        nbytes += size
    return seconds, nbytes


def _memory(profile: Profile, pb: _Problem, parts, prefill: list[str], decode: list[str]) -> dict[str, float]:
    """Resident bytes per device holding both phases' parts (one copy where memory is shared
    with the device that holds the other)."""
    used = {d.name: 0.0 for d in profile.devices}
    for part, a, b in zip(parts, prefill, decode):
        used[b] += part.resident_bytes
        if a != b:
            link = profile.link(a, b)
            if not (link is not None and link.shared_memory):
                used[a] += part.resident_bytes
    return used


def plan_phases(cfg: ModelConfig, profile: Profile, weight_dtype: str | Mapping[str, str] = "f32", capacity: int = 1024,
                prompt_tokens: int = PROMPT_TOKENS, context: int | None = None) -> PhasePlan:
    """The decode plan of `plan_partition` and, beside it, the prompt's own placement when the
    cost model says splitting the phases gives a faster first token."""
    decode_plan = plan_partition(cfg, profile, weight_dtype, capacity, context)
    decode = [p.device for p in decode_plan.parts]
    ctx = attended_keys((context or profile.policy.context_tokens or capacity) - 1, capacity)
    parts = model_parts(cfg, weight_dtype, context=ctx, capacity=capacity)
    pb = _Problem(profile, parts, cfg.hidden_size, cfg.vocab_size)
    tokens = min(prompt_tokens, capacity)
    single = pb.evaluate(decode, tokens=tokens)[0]
    options = decode_options(profile, pb, decode, tokens)
    base = PhasePlan(profile.name, tokens, decode_plan, list(decode), False, single * 1e3, 0.0, 0.0, single * 1e3,
                     {d: b / GB for d, b in _memory(profile, pb, parts, decode, decode).items()}, decode_options=options)
    prefill = pb.solve(_Weights(1.0, 0.0), memory=False, tokens=tokens)
    if prefill is None or prefill == decode:
        base.reasons.append("one placement serves both phases: no other placement prefills faster")
        return base
    t_prefill = pb.evaluate(prefill, tokens=tokens)[0]
    t_handoff, handoff_bytes = _handoff(profile, parts, prefill, decode, tokens)
    memory = _memory(profile, pb, parts, prefill, decode)
    over = [d for d, used in memory.items() if used > pb.caps[d]]
    if over:
        base.reasons.append(f"a prefill placement would be faster but needs the weights twice: {over[0]} would hold "
                            f"{memory[over[0]] / GB:.2f} GB of {pb.caps[over[0]] / GB:.2f} GB")
        return base
    if (t_prefill + t_handoff) * MIN_GAIN > single:
        base.reasons.append(f"a prefill placement would take {(t_prefill + t_handoff) * 1e3:.1f} ms with its KV hand-off "
                            f"against {single * 1e3:.1f} ms: less than {MIN_GAIN:.2f}x, one placement")
        return base
    moved = sorted({d for d, e in zip(prefill, decode) if d != e})
    reasons = [f"prefill is compute-bound: {len([d for d in prefill if d != profile.host.name])} of {len(parts)} parts "
               f"prefill on {', '.join(moved)} ({t_prefill * 1e3:.1f} ms for {tokens} tokens against {single * 1e3:.1f} ms "
               f"on the decode placement)",
               "decode is bandwidth- and call-bound: it keeps the single plan"
               f" ({decode_plan.latency_ms:.2f} ms/token)"]
    if handoff_bytes:
        reasons.append(f"KV hand-off {handoff_bytes / 2**20:.1f} MiB in {t_handoff * 1e3:.1f} ms")
    else:
        reasons.append("KV hand-off free: the devices share memory")
    return PhasePlan(profile.name, tokens, decode_plan, prefill, True, t_prefill * 1e3, t_handoff * 1e3, handoff_bytes,
                     single * 1e3, {d: b / GB for d, b in memory.items()}, reasons, options)


def ideal_prefill_ms(cfg: ModelConfig, profile: Profile, weight_dtype: str | Mapping[str, str] = "f32", capacity: int = 1024,
                     prompt_tokens: int = PROMPT_TOKENS) -> float:
    """A bound on the prompt's time that no placement of it can beat: the layers pipelined over
    every device at once, each taking a share of them in proportion to its speed, with no
    bubbles, chunk overheads or transfers, and the embeddings and head on their fastest device.
    It says how much any prefill split (pipelined or not) could gain on a profile."""
    parts = model_parts(cfg, weight_dtype, context=attended_keys(capacity - 1, capacity), capacity=capacity)
    pb, tokens = _Problem(profile, parts, cfg.hidden_size, cfg.vocab_size), min(prompt_tokens, capacity)

    def seconds(p, d) -> float:
        return pb.seconds(p, d, tokens=tokens) if pb.can_run(p, d) else math.inf

    ends = sum(min(seconds(p, d) for d in profile.devices) for p in parts if p.layer is None)
    # layer stacks per second with every device working; one lacking a layer's dtype adds nothing
    rate = sum(1.0 / sum(seconds(p, d) for p in parts if p.layer is not None) for d in profile.devices)
    return (ends + 1.0 / rate) * 1e3
