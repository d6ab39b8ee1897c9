"""Split a model across a profile's devices by estimated cost: the partition plan.

The model is a chain of parts (embeddings, each layer's attention and FFN, the output head).
Each part has a cost on each device from what decides latency on IREE (see planner/profiles/
README.md, "Cost model"): the dispatches it runs times the device's per-dispatch overhead,
plus its work: a decode step reads every weight once (matrix-vector products are bound by
memory bandwidth, or by cache bandwidth when the whole model fits the last-level cache) and
the positions of the KV cache in use as many times as the compiled code passes over them; a
prefill multiplies prompt rows by weights (compute-bound, at the device's measured matmul
rate) and attends over the positions it fills at the measured attention rate. Every module invocation costs the device's call
overhead; moving the hidden state between devices costs the link's latency plus bytes over
bandwidth. Dynamic programming over the chain picks a device per part that minimises the
policy's objective under each device's memory and, through a Lagrange multiplier, the
average power budget. Parts a device cannot run (dtype or op class) go to a device that can
(the host CPU can run everything), and the plan says why each part landed where it did.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Mapping

from iree_glm.bundle.model_config import ModelConfig
from iree_glm.errors import UserError
from iree_glm.planner.profile import Device, Profile
from iree_glm.bundle.kv_layout import attended_keys

GB = 1e9
# Bytes per weight, scales included (int8 per-channel, int4 with f16 scales per 32 weights).
BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5 + 2 / 32}
ACTIVATION_BYTES = 4  # hidden states travel as f32
PREFILL_TOKENS = 128  # prompt length of the plan's prefill estimate
PART_OPS = {
    "embed": ("gather",),
    "attn": ("norm", "matmul", "rope", "attention"),
    "ffn": ("norm", "matmul", "elementwise"),
    "head": ("norm", "matmul"),
}
# Commands (dispatches and copies) one call executes per part and backend, counted in the stream
# IR of the exported model (`python tools/count_dispatches.py`: stage modules of the default
# model, embed / + attention / + FFN / + a second layer / + head, decode and prefill). "embed"
# includes the positions and rotary tables that the first attention of a call computes once.
# Backends without a count of their own (NPUs) use the CPU's.
# They count IREE's attention form (decode reads the cache in place, q/k/v fused); our attention
# kernel, an input pass, is not in them.
DISPATCHES = {
    "llvm-cpu": {"decode": {"embed": 11, "attn": 17, "ffn": 6, "head": 2},
                 "prefill": {"embed": 16, "attn": 24, "ffn": 6, "head": 2}},
    "vulkan-spirv": {"decode": {"embed": 13, "attn": 21, "ffn": 7, "head": 3},
                     "prefill": {"embed": 19, "attn": 21, "ffn": 5, "head": 3}},
}
# The KV cache is updated in place (model.py): a call scatters its new entries. A decode step
# reads the n positions in use (rounded up, kv_cache.attended_keys) of K and V in place, once
# (`decode_attention`). A prefill call gathers them into a copy that attention reads: 2 reads
# and 1 write of memory the call allocates. Nothing touches the rest of the capacity.
KV_READ_PASSES = {"decode": 1, "prefill": 2}
KV_WRITE_PASSES = {"decode": 0, "prefill": 1}


def dispatches(device: Device, phase: str, kind: str) -> int:
    """Commands `kind` runs per `phase` call (decode or prefill) on `device`'s backend."""
    return DISPATCHES.get(device.backend, DISPATCHES["llvm-cpu"])[phase][kind]


class ScheduleError(UserError):
    """No plan satisfies the profile (the model does not fit, or no device can run a part)."""


@dataclass(frozen=True)
class Part:
    """One schedulable piece of the model, with the inputs of its cost on any device."""

    name: str  # "embed", "layers.3.attn", "layers.3.ffn", "head"
    kind: str  # embed | attn | ffn | head
    layer: int | None
    dtype: str  # weight dtype
    flops: float  # per generated token (weights' matrix-vector products and attention)
    read_bytes: float  # streamed per generated token: weights (or one embedding row) + KV-cache passes
    resident_bytes: float  # weights + KV cache at full capacity, kept on the device
    weight_bytes: float = 0.0  # the part's weights (read once per call, decode or prefill)
    matmul_flops: float = 0.0  # per prompt row in a prefill (2 x weights; the head runs on the last row only)
    attn_flops: float = 0.0  # per prompt row and attended key in a prefill (scores and values)
    write_bytes: float = 0.0  # per decode step: written to memory the call allocates (gathered K/V)
    row_bytes: float = 0.0  # per prompt row: activations read and written by norms, rotary, residuals
    kv_token_bytes: float = 0.0  # K and V of one position (attention parts)
    capacity: int = 0  # KV-cache positions per row (a prefill attends at most this many)

    @property
    def ops(self) -> tuple[str, ...]:
        return PART_OPS[self.kind]


def _dtype_for(weight_dtype: str | Mapping[str, str], name: str, kind: str) -> str:
    if isinstance(weight_dtype, str):
        return weight_dtype
    for key in (name, kind, "default"):
        if key in weight_dtype:
            return weight_dtype[key]
    return "f32"


def model_parts(
    cfg: ModelConfig,
    weight_dtype: str | Mapping[str, str] = "f32",
    context: int = 512,
    capacity: int = 1024,
    kv_bytes: int = 4,
) -> list[Part]:
    """The model's parts in execution order. `weight_dtype` is one dtype or a mapping from part
    name or kind (embed/attn/ffn/head, or "default") to dtype; `context` is the number of cached
    positions a decode step attends to (see kv_cache.attended_keys), `capacity` the KV-cache
    size kept in memory."""
    h, inter, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    kv_token = 2 * kv * kv_bytes  # K and V of one token
    f = ACTIVATION_BYTES

    def part(name: str, kind: str, layer: int | None, params: float, **cost) -> Part:
        dt = _dtype_for(weight_dtype, name, kind)
        if dt not in BYTES_PER_WEIGHT:
            raise ScheduleError(f"weight dtype '{dt}' for {name} is not one of {', '.join(BYTES_PER_WEIGHT)}")
        wb = params * BYTES_PER_WEIGHT[dt]
        rows = cost.pop("rows", None)  # the embeddings read one row per token, not the table
        streamed = wb if rows is None else rows * BYTES_PER_WEIGHT[dt]
        kv_read, kv_keep = cost.pop("kv_read", 0.0), cost.pop("kv_keep", 0.0)
        return Part(name, kind, layer, dt, resident_bytes=wb + kv_keep, read_bytes=streamed + kv_read,
                    weight_bytes=streamed, **cost)

    parts = [part("embed", "embed", None, v * h, flops=0.0, rows=h, row_bytes=2 * h * f)]
    for i in range(cfg.num_layers):
        attn_params = h * (q + 2 * kv) + q * h
        parts.append(part(
            f"layers.{i}.attn", "attn", i, attn_params, flops=2 * attn_params + 4 * q * context,
            kv_read=kv_token * KV_READ_PASSES["decode"] * context, kv_keep=kv_token * capacity,
            matmul_flops=2 * attn_params, attn_flops=4 * q, write_bytes=kv_token * (KV_WRITE_PASSES["decode"] * context + 1),
            row_bytes=(6 * h + 4 * (q + 2 * kv)) * f, kv_token_bytes=kv_token, capacity=capacity))
        ffn_params = 3 * h * inter
        parts.append(part(f"layers.{i}.ffn", "ffn", i, ffn_params, flops=2 * ffn_params + 4 * inter,
                          matmul_flops=2 * ffn_params, row_bytes=(6 * h + 6 * inter) * f))
    parts.append(part("head", "head", None, v * h, flops=2.0 * v * h))
    return parts


def working_set(parts: list[Part]) -> float:
    """Bytes a decode step streams: whether they fit a device's cache decides its bandwidth."""
    return sum(p.read_bytes for p in parts)


def part_seconds(part: Part, device: Device, ignore_support: bool = False, tokens: int = 1,
                 working_set_bytes: float = math.inf) -> float:
    """Time of one part on one device in one call: a decode step (`tokens` = 1) or a prefill of
    `tokens` prompt rows. `working_set_bytes` (what the whole step streams) picks cache or
    memory bandwidth."""
    peak = device.peak_gflops.get(part.dtype)
    if peak is None:
        if not ignore_support:
            return math.inf
        peak = max(device.peak_gflops.values())
    bw = device.bandwidth_gbs(working_set_bytes) * GB
    fresh_bw = (device.fresh_memory_gbs or device.memory_bandwidth_gbs) * GB
    overhead = dispatches(device, "decode" if tokens == 1 else "prefill", part.kind) * device.dispatch_overhead_us * 1e-6
    if tokens == 1:
        # Matrix-vector products: never slower per FLOP than the f32 matvec chain that measured
        # the bandwidth (2 FLOPs per 4-byte weight). lavapipe's 128-row matmul, which sets its
        # peak, runs at half its matvec rate and would otherwise bound its decode (measured).
        rate = max(peak, device.memory_bandwidth_gbs / 2)
        return overhead + max(part.flops / (rate * GB), part.read_bytes / bw + part.write_bytes / fresh_bw)
    # A prefill of `tokens` rows into an empty row attends to the positions it fills (rounded up).
    keys = attended_keys(tokens - 1, part.capacity) if part.kv_token_bytes else 0
    attention = device.attention_gflops or device.peak_gflops.get("f32", peak)
    weights = max(tokens * part.matmul_flops / (peak * GB), part.weight_bytes / bw)
    if part.kind == "head":  # logits of the last prompt row only
        weights = max(part.flops / (peak * GB), part.weight_bytes / bw)
    kv = part.kv_token_bytes * (KV_READ_PASSES["prefill"] * keys / bw + (KV_WRITE_PASSES["prefill"] * keys + tokens) / fresh_bw)
    return overhead + weights + tokens * keys * part.attn_flops / (attention * GB) + tokens * part.row_bytes / bw + kv


def transfer_seconds(profile: Profile, a: str, b: str, nbytes: float) -> float:
    """Moving `nbytes` from device a to b: direct link, else through the host; inf if no route."""
    if a == b:
        return 0.0
    link = profile.link(a, b)
    if link is not None:
        return link.latency_us * 1e-6 + nbytes / (link.bandwidth_gbs * GB)
    host = profile.host.name
    if host in (a, b):
        return math.inf
    return transfer_seconds(profile, a, host, nbytes) + transfer_seconds(profile, host, b, nbytes)


# -- the plan ---------------------------------------------------------------------------------

@dataclass
class Placement:
    part: str
    kind: str
    layer: int | None
    dtype: str
    device: str
    reason: str  # cost | constraint | fallback
    detail: str
    ms: float  # estimated per-token time of this part on its device


@dataclass
class Segment:
    """Consecutive parts on one device: one module invocation per token."""

    device: str
    first: int  # index into parts
    last: int  # inclusive


@dataclass
class PartitionPlan:
    profile: str
    objective: str
    power_budget_w: float | None
    context_tokens: int
    parts: list[Placement]
    segments: list[Segment]
    latency_ms: float  # per decoded token
    energy_mj: float  # per decoded token
    transfer_ms: float
    memory_gb: dict[str, float]
    device_kinds: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    format_version: int = 1
    prefill_tokens: int = PREFILL_TOKENS
    prefill_ms: float = 0.0  # estimated time to prefill `prefill_tokens` prompt tokens with this placement

    @property
    def avg_power_w(self) -> float:
        return self.energy_mj / self.latency_ms if self.latency_ms else 0.0

    @property
    def devices_used(self) -> list[str]:
        return list(dict.fromkeys(s.device for s in self.segments))

    def device_of(self, part: str) -> str:
        return next(p.device for p in self.parts if p.part == part)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "PartitionPlan":
        d = json.loads(text)
        d["parts"] = [Placement(**p) for p in d["parts"]]
        d["segments"] = [Segment(**s) for s in d["segments"]]
        return cls(**d)


# -- dynamic programming ----------------------------------------------------------------------

@dataclass
class _Weights:
    """J = alpha * T + beta * E_dynamic (E_dynamic: energy above every device's idle draw)."""

    alpha: float
    beta: float


class _Problem:
    def __init__(self, profile: Profile, parts: list[Part], hidden: int, vocab: int):
        self.profile = profile
        self.parts = parts
        self.devices = list(profile.devices)
        self.host = profile.host.name
        self.act_bytes = hidden * ACTIVATION_BYTES
        self.logit_bytes = vocab * ACTIVATION_BYTES
        self.idle_w = sum(d.idle_power_w for d in self.devices)
        self.caps = {d.name: self._cap(d) for d in self.devices}
        self.working_set = working_set(parts)

    def seconds(self, part: Part, d: Device, ignore_support: bool = False, tokens: int = 1) -> float:
        return part_seconds(part, d, ignore_support, tokens, self.working_set)

    def _cap(self, d: Device) -> float:
        p = self.profile
        pool = (p.host.memory_gb - p.policy.memory_reserve_gb) * GB
        if d.name == p.host.name:
            return pool
        link = p.link(d.name, p.host.name)
        return min(d.memory_gb * GB, pool) if link is not None and link.shared_memory else d.memory_gb * GB

    def can_run(self, part: Part, d: Device) -> bool:
        return d.supports(part.dtype, part.ops) is None

    def hop(self, a: str, b: str, nbytes: float) -> float:
        """Transfer plus the invocation that starts a segment on b."""
        if a == b:
            return 0.0
        return transfer_seconds(self.profile, a, b, nbytes) + self.profile.device(b).call_overhead_us * 1e-6

    def solve(self, w: _Weights, ignore_support: bool = False, memory: bool = True, tokens: int = 1) -> list[str] | None:
        """Device name per part minimising J for a call of `tokens` rows (a decode step: 1; a
        prefill: the prompt), or None if nothing fits."""
        total = sum(p.resident_bytes for p in self.parts)
        tight = [d.name for d in self.devices if memory and self.caps[d.name] < total]
        host_call = self.profile.host.call_overhead_us * 1e-6
        # state: (device, memory used on tight devices) -> (J, back pointer)
        start_state = (self.host, tuple(0.0 for _ in tight))
        layers: list[dict] = []
        frontier = {start_state: (w.alpha * host_call, None)}
        for part in self.parts:
            nxt: dict = {}
            for (prev, mem), (j, _) in frontier.items():
                for d in self.devices:
                    if not ignore_support and not self.can_run(part, d):
                        continue
                    t = self.seconds(part, d, ignore_support, tokens)
                    x = self.hop(prev, d.name, self.act_bytes * tokens)
                    if math.isinf(t + x):
                        continue
                    new_mem = mem
                    if d.name in tight:
                        k = tight.index(d.name)
                        used = mem[k] + part.resident_bytes
                        if used > self.caps[d.name]:
                            continue
                        new_mem = mem[:k] + (used,) + mem[k + 1:]
                    cost = j + w.alpha * (t + x) + w.beta * t * (d.active_power_w - d.idle_power_w)
                    key = (d.name, new_mem)
                    if key not in nxt or cost < nxt[key][0]:
                        nxt[key] = (cost, (prev, mem))
            frontier = _pareto(nxt) if tight else nxt
            layers.append(frontier)
            if not frontier:
                return None
        # the logits go back to the host
        best, best_key = math.inf, None
        for key, (j, _) in frontier.items():
            j += w.alpha * transfer_seconds(self.profile, key[0], self.host, self.logit_bytes)
            if j < best:
                best, best_key = j, key
        if best_key is None:
            return None
        out, key = [], best_key
        for frontier in reversed(layers):
            out.append(key[0])
            key = frontier[key][1]
        return out[::-1]

    def evaluate(self, devices: list[str], ignore_support: bool = False, tokens: int = 1) -> tuple[float, float, float]:
        """(seconds, joules, transfer seconds) of one call over `tokens` tokens (decode: 1)."""
        t_total, e_dyn, t_x = self.profile.host.call_overhead_us * 1e-6, 0.0, 0.0
        prev = self.host
        for part, name in zip(self.parts, devices):
            d = self.profile.device(name)
            t = self.seconds(part, d, ignore_support, tokens)
            x = self.hop(prev, name, self.act_bytes * tokens)
            t_total += t + x
            t_x += transfer_seconds(self.profile, prev, name, self.act_bytes * tokens)
            e_dyn += t * (d.active_power_w - d.idle_power_w)
            prev = name
        back = transfer_seconds(self.profile, prev, self.host, self.logit_bytes)
        t_total += back
        t_x += back
        return t_total, e_dyn + t_total * self.idle_w, t_x


def _pareto(states: dict) -> dict:
    """Drop states that use at least as much memory everywhere and cost at least as much."""
    by_device: dict[str, list] = {}
    for key, val in states.items():
        by_device.setdefault(key[0], []).append((key, val))
    out = {}
    for items in by_device.values():
        items.sort(key=lambda kv: kv[1][0])
        kept: list = []
        for key, val in items:
            if any(all(a <= b for a, b in zip(k[1], key[1])) for k, _ in kept):
                continue
            kept.append((key, val))
        out.update(kept)
    return out


def plan_partition(
    cfg: ModelConfig,
    profile: Profile,
    weight_dtype: str | Mapping[str, str] = "f32",
    capacity: int = 1024,
    context: int | None = None,
) -> PartitionPlan:
    """The partition plan of `cfg` on `profile` for decoding with a KV cache of `capacity`.
    A decode step costs what the positions in use cost: `context` (default: the profile's
    context_tokens, else a full cache: the slowest step), rounded up as the runtime does."""
    context = attended_keys((context or profile.policy.context_tokens or capacity) - 1, capacity)
    parts = model_parts(cfg, weight_dtype, context=context, capacity=capacity)
    pb = _Problem(profile, parts, cfg.hidden_size, cfg.vocab_size)
    policy = profile.policy

    host_only = [pb.host] * len(parts)
    t0, e0, _ = pb.evaluate(host_only)
    w_t = {"latency": 1 / t0, "energy": 0.0, "balanced": 1 / t0}[policy.objective]
    w_e = {"latency": 0.0, "energy": 1 / e0, "balanced": 1 / e0}[policy.objective]

    def weights(mu: float) -> _Weights:
        budget = policy.power_budget_w or 0.0
        return _Weights(w_t + (w_e + mu / e0) * pb.idle_w - mu / e0 * budget, w_e + mu / e0)

    wish = pb.solve(weights(0.0), ignore_support=True, memory=False)
    free = pb.solve(weights(0.0), memory=False)
    fitted = pb.solve(weights(0.0))
    if fitted is None:
        need = sum(p.resident_bytes for p in parts) / GB
        have = ", ".join(f"{n} {c / GB:.1f}" for n, c in pb.caps.items())
        raise ScheduleError(f"{profile.source}: the model needs {need:.2f} GB of weights and KV cache; the devices hold {have} GB (after the policy's reserve)")
    final, warnings = fitted, []
    if policy.power_budget_w is not None:
        final, warnings = _meet_power_budget(pb, fitted, weights, policy.power_budget_w)
    total_mem = sum(p.resident_bytes for p, d in zip(parts, final))
    pool = pb.caps[pb.host]
    if total_mem > pool and all(_shares_memory(profile, d) for d in final):
        warnings.append(f"the model needs {total_mem / GB:.2f} GB but shared memory holds {pool / GB:.2f} GB")

    placements = []
    for i, part in enumerate(parts):
        name = final[i]
        reason, detail = _reason(profile, part, wish[i], free[i], fitted[i], name)
        ms = pb.seconds(part, profile.device(name)) * 1e3
        placements.append(Placement(part.name, part.kind, part.layer, part.dtype, name, reason, detail, ms))
    t, e, tx = pb.evaluate(final)
    memory = {d.name: 0.0 for d in profile.devices}
    for part, name in zip(parts, final):
        memory[name] += part.resident_bytes / GB
    return PartitionPlan(
        profile=profile.name, objective=policy.objective, power_budget_w=policy.power_budget_w,
        context_tokens=context, parts=placements, segments=_segments(final), latency_ms=t * 1e3,
        energy_mj=e * 1e3, transfer_ms=tx * 1e3, memory_gb=memory,
        device_kinds={d.name: d.kind for d in profile.devices}, warnings=warnings,
        prefill_ms=pb.evaluate(final, tokens=PREFILL_TOKENS)[0] * 1e3,
    )


def estimate_placement(
    cfg: ModelConfig, profile: Profile, devices: list[str], weight_dtype: str | Mapping[str, str] = "f32",
    capacity: int = 1024, context: int | None = None, prefill_tokens: int = PREFILL_TOKENS,
) -> dict[str, float]:
    """Estimates for a given placement (device name per part, e.g. a built bundle's plan) on
    `profile`'s numbers: decode ms per token, its transfer ms, prefill ms of `prefill_tokens`."""
    context = attended_keys((context or profile.policy.context_tokens or capacity) - 1, capacity)
    parts = model_parts(cfg, weight_dtype, context=context, capacity=capacity)
    if len(devices) != len(parts):
        raise ScheduleError(f"the placement has {len(devices)} parts, the model {len(parts)}")
    pb = _Problem(profile, parts, cfg.hidden_size, cfg.vocab_size)
    t, _, tx = pb.evaluate(devices)
    return {"decode_ms": t * 1e3, "transfer_ms": tx * 1e3, "prefill_ms": pb.evaluate(devices, tokens=prefill_tokens)[0] * 1e3}


def _shares_memory(profile: Profile, name: str) -> bool:
    if name == profile.host.name:
        return True
    link = profile.link(name, profile.host.name)
    return link is not None and link.shared_memory


def _meet_power_budget(pb: _Problem, plan: list[str], weights, budget: float) -> tuple[list[str], list[str]]:
    """Raise the price of energy until the average power fits the budget (Lagrangian search)."""

    def power(assign: list[str]) -> float:
        t, e, _ = pb.evaluate(assign)
        return e / t

    if power(plan) <= budget:
        return plan, []
    lo, hi, best = 0.0, 1e-3, None
    while hi < 1e6:
        cand = pb.solve(weights(hi))
        if cand is not None and power(cand) <= budget:
            best = cand
            break
        lo, hi = hi, hi * 4
    if best is None:
        lowest = min((pb.solve(weights(m)) or plan for m in (0.0, 1e2, 1e4, 1e6)), key=power)
        return lowest, [f"power budget {budget:g} W not met: the lowest-power plan found averages {power(lowest):.2f} W"]
    for _ in range(30):
        mid = (lo + hi) / 2
        cand = pb.solve(weights(mid))
        if cand is not None and power(cand) <= budget:
            best, hi = cand, mid
        else:
            lo = mid
    return best, []


def _reason(profile: Profile, part: Part, wish: str, free: str, fitted: str, final: str) -> tuple[str, str]:
    """Why `part` runs on `final` (cost, constraint or fallback) and a short explanation."""
    if final == wish:
        return "cost", f"cheapest on {final}"
    why_not = profile.device(wish).supports(part.dtype, part.ops)
    if why_not and final == free == fitted:
        if final == profile.host.name:
            return "fallback", f"{why_not}; falls back to the host cpu"
        return "cost", f"cheapest that can run it ({why_not})"
    if final != fitted:
        return "constraint", f"power budget {profile.policy.power_budget_w:g} W (cheapest: {fitted})"
    if fitted != free:
        return "constraint", f"memory: {free} is full"
    return "cost", f"cheapest on {final} given transfers around other parts"


def _segments(devices: list[str]) -> list[Segment]:
    out: list[Segment] = []
    for i, d in enumerate(devices):
        if out and out[-1].device == d:
            out[-1].last = i
        else:
            out.append(Segment(d, i, i))
    return out


def quant_dtypes(mode: str, head: str = "int8", embeddings: str = "int8") -> dict[str, str]:
    """Weight dtypes per part kind for a bundle built with `--quant MODE` (see quant.py)."""
    if mode == "none":
        return {"default": "f32"}
    return {"default": mode, "head": "int8" if head == "int8" else "f32",
            "embed": "int8" if embeddings == "int8" else "f32"}
