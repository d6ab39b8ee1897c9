"""A partition plan for people: a text table (`compile --report`) and an SVG picture.

The SVG is written by hand (no plotting dependency): one row per device, one box per part,
coloured by the reason it is there, with the estimated per-token latency and energy.
"""

from __future__ import annotations

from html import escape

from iree_glm.bundle.manifest import PlanEntry
from iree_glm.planner.phases import PhasePlan
from iree_glm.planner.scheduler import PartitionPlan

REASON_COLOURS = {"cost": "#4c9be8", "constraint": "#f0a030", "fallback": "#d9534f"}


def _groups(plan: PartitionPlan) -> list[tuple[str, str, str, str, float]]:
    """Consecutive layer parts with the same device, reason and detail become one row:
    (label, device, reason, detail, ms)."""
    rows: list[list] = []  # [device, reason, detail, ms, first layer, last layer, kinds, name]
    for p in plan.parts:
        last = rows[-1] if rows else None
        if p.layer is not None and last and last[4] is not None and last[:3] == [p.device, p.reason, p.detail]:
            last[3] += p.ms
            last[5] = p.layer
            last[6].add(p.kind)
            continue
        rows.append([p.device, p.reason, p.detail, p.ms, p.layer, p.layer, {p.kind}, p.part])
    out = []
    for device, reason, detail, ms, lo, hi, kinds, name in rows:
        if lo is not None and (lo != hi or len(kinds) > 1):
            span = f"layers.{lo}" if lo == hi else f"layers.{lo}-{hi}"
            name = f"{span}.{'+'.join(k for k in ('attn', 'ffn') if k in kinds)}"
        out.append((name, device, reason, detail, ms))
    return out


def text_report(plan: PartitionPlan, stand_in: dict[str, str] | None = None) -> str:
    """Which part runs where and why, with the per-token estimates. `stand_in` maps a device
    whose driver is absent to the device standing in for it (marked on every line)."""
    stand_in = stand_in or {}
    budget = f", power budget {plan.power_budget_w:g} W" if plan.power_budget_w else ""
    lines = [f"partition plan for profile '{plan.profile}' (objective {plan.objective}{budget}, "
             f"costs per decoded token at {plan.context_tokens} tokens of context)"]
    width = max(len(g[0]) for g in _groups(plan))
    for name, device, reason, detail, ms in _groups(plan):
        where = device if device not in stand_in else f"{device} [STAND-IN on {stand_in[device]}]"
        lines.append(f"  {name:<{width}}  {where:<12} {reason:<10} {ms:8.3f} ms  {detail}")
    lines.append("  segments: " + " -> ".join(
        f"{s.device}[{plan.parts[s.first].part}..{plan.parts[s.last].part}]" for s in plan.segments))
    mem = ", ".join(f"{d} {gb:.2f} GB" for d, gb in plan.memory_gb.items() if gb)
    share = 100 * plan.transfer_ms / plan.latency_ms if plan.latency_ms else 0.0
    lines.append(f"  estimate: {plan.latency_ms:.2f} ms/token, {plan.energy_mj:.1f} mJ/token "
                 f"({plan.avg_power_w:.2f} W average), transfers {plan.transfer_ms:.3f} ms ({share:.1f}%); "
                 f"prefill of {plan.prefill_tokens} tokens {plan.prefill_ms:.1f} ms; memory: {mem}")
    for w in plan.warnings:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)


def phase_report(pp: PhasePlan) -> str:
    """Both phases' placements and why they differ (or why one placement serves both)."""
    def where(devices: list[str]) -> str:
        counts: dict[str, int] = {}
        for d in devices:
            counts[d] = counts.get(d, 0) + 1
        return ", ".join(f"{d} {n} part(s)" for d, n in counts.items())

    decode = [p.device for p in pp.decode.parts]
    lines = [f"phases ({pp.prompt_tokens}-token prompt, estimates):",
             f"  prefill: {where(pp.prefill_devices)}: {pp.prefill_ms:.1f} ms"
             + (f" + KV hand-off {pp.handoff_ms:.2f} ms" if pp.split else ""),
             f"  decode:  {where(decode)}: {pp.decode.latency_ms:.2f} ms/token",
             f"  time to first token {pp.ttft_ms:.1f} ms against {pp.single_prefill_ms:.1f} ms with one placement "
             f"({pp.speedup:.2f}x)" if pp.split else f"  one placement for both phases: time to first token {pp.ttft_ms:.1f} ms"]
    lines += [f"  why: {r}" for r in pp.reasons]
    return "\n".join(lines)


def plans_report(plans: list[PlanEntry] | None) -> str:
    """The plans a bundle carries (the runtime switches between them; the first is its default)."""
    if not plans:
        return "plans: one (the bundle predates plans)"
    lines = ["plans in the bundle (first: default; switch with run --plan/--power-budget, Session.use_plan, POST /admin/plan):"]
    for p in plans:
        where = ", ".join(dict.fromkeys(s.device for s in p.prefill_stages)) if p.prefill_stages else "the decode placement"
        decode = f" on {p.decode_device} ({p.decode_module}; a switch moves the KV cache)" if p.decode_device else ""
        lines.append(f"  {p.name}: prefill on {where}, time to first token {p.prefill_ms + p.handoff_ms:.1f} ms "
                     f"({p.prompt_tokens} tokens), decode{decode} {p.decode_ms:.2f} ms/token, {p.power_w:g} W (estimates)")
        lines += [f"    {r}" for r in p.reasons if p.decode_device]
    return "\n".join(lines)


def svg_picture(plan: PartitionPlan, stand_in: dict[str, str] | None = None) -> str:
    """An SVG image of the plan: devices as rows, parts left to right."""
    stand_in = stand_in or {}
    devices = list(plan.device_kinds)
    n = len(plan.parts)
    left, top, row_h, box_h = 170, 60, 46, 30
    cell = max(6.0, min(40.0, 900.0 / n))
    width = int(left + cell * n + 30)
    height = int(top + row_h * len(devices) + 90)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(plan.profile)}: objective {escape(plan.objective)}</text>',
           f'<text x="10" y="42">estimated {plan.latency_ms:.2f} ms/token, {plan.energy_mj:.1f} mJ/token, '
           f'{plan.avg_power_w:.2f} W, transfers {plan.transfer_ms:.3f} ms</text>']
    for r, d in enumerate(devices):
        y = top + r * row_h
        label = f"{d} ({plan.device_kinds[d]})" + (" stand-in" if d in stand_in else "")
        out.append(f'<text x="10" y="{y + box_h * 0.7:.0f}">{escape(label)}</text>')
        out.append(f'<line x1="{left}" y1="{y + box_h / 2}" x2="{left + cell * n}" y2="{y + box_h / 2}" stroke="#ddd"/>')
    prev_y = None
    for i, p in enumerate(plan.parts):
        y = top + devices.index(p.device) * row_h
        x = left + i * cell
        colour = REASON_COLOURS.get(p.reason, "#999")
        dash = ' stroke-dasharray="3,2"' if p.device in stand_in else ""
        out.append(f'<rect x="{x:.1f}" y="{y}" width="{cell - 1:.1f}" height="{box_h}" fill="{colour}" stroke="#333" stroke-width="0.5"{dash}>'
                   f'<title>{escape(p.part)} ({p.dtype}) on {escape(p.device)}: {p.reason}, {escape(p.detail)}, {p.ms:.3f} ms</title></rect>')
        if prev_y is not None and prev_y != y:
            out.append(f'<line x1="{x:.1f}" y1="{prev_y + box_h / 2}" x2="{x:.1f}" y2="{y + box_h / 2}" stroke="black" stroke-width="1.5"/>')
        prev_y = y
    y = top + row_h * len(devices) + 10
    for i, p in enumerate(plan.parts):
        if p.layer is None or (p.kind == "attn" and p.layer % max(1, n // 24) == 0):
            label = p.part if p.layer is None else f"L{p.layer}"
            out.append(f'<text x="{left + i * cell:.1f}" y="{y + 8}" font-size="9">{escape(label)}</text>')
    x = 10
    for reason, colour in REASON_COLOURS.items():
        out.append(f'<rect x="{x}" y="{y + 25}" width="14" height="14" fill="{colour}"/><text x="{x + 20}" y="{y + 37}">{reason}</text>')
        x += 110
    out.append("</svg>")
    return "\n".join(out) + "\n"
