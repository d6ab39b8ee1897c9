"""Estimated latency-energy Pareto front of a model on device profiles (scheduler estimates only).

For each profile: the CPU-only plan, then plans for each objective and a sweep of power
budgets; prints a table and writes an SVG plot of the non-dominated points per profile.
Default model: a GLM-edge-1.5B-class shape (hidden 2048, 28 layers, GQA 16/4, FFN 6144,
vocab 59264; ~1.6B parameters), int4 layers with an int8 head.

    python tools/pareto.py [--profiles snapdragon-8-gen3 dimensity-9300 raspberry-pi-5]
                           [--checkpoint DIR] [--dtype int4] [--context 1024] [-o pareto.svg]
"""

from __future__ import annotations

import argparse
from itertools import combinations
from dataclasses import replace
from html import escape
from pathlib import Path

from iree_glm.bundle.model_config import ModelConfig
from iree_glm.frontend.hf_config import read_hf_config
from iree_glm.planner.profile import load_profile
from iree_glm.planner.scheduler import ScheduleError, plan_partition, quant_dtypes

GLM_EDGE_1_5B_CLASS = ModelConfig(family="glm4", vocab_size=59264, hidden_size=2048, intermediate_size=6144,
                                  num_layers=28, num_heads=16, num_kv_heads=4, head_dim=128)
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def sweep(cfg: ModelConfig, name: str, dtypes: dict, capacity: int) -> list[dict]:
    """Plans for: the CPU alone; each set of accelerators with each objective; power budgets."""
    profile = load_profile(name)
    rows = []
    cpu_only = replace(profile, devices=(profile.host,), links=())
    plan = plan_partition(cfg, cpu_only, dtypes, capacity)
    rows.append({"label": "cpu only", "plan": plan})
    others = [d for d in profile.devices if d is not profile.host]
    for k in range(1, len(others) + 1):  # each set of accelerators the host may use
        for subset in combinations(others, k):
            names = {profile.host.name, *(d.name for d in subset)}
            sub = replace(profile, devices=(profile.host, *subset), links=tuple(l for l in profile.links if {l.a, l.b} <= names))
            for objective in ("latency", "balanced", "energy"):
                p = replace(sub, policy=replace(profile.policy, objective=objective, power_budget_w=None))
                label = f"{objective}, {'+'.join(d.name for d in subset)}"
                rows.append({"label": label, "plan": plan_partition(cfg, p, dtypes, capacity)})
    top = max(r["plan"].avg_power_w for r in rows)
    low = min(r["plan"].avg_power_w for r in rows)
    for i in range(1, 6):
        budget = top - (top - low) * i / 6
        p = replace(profile, policy=replace(profile.policy, objective="latency", power_budget_w=round(budget, 3)))
        try:
            plan = plan_partition(cfg, p, dtypes, capacity)
        except ScheduleError:
            continue
        if not plan.warnings:
            rows.append({"label": f"latency, <= {budget:.2f} W", "plan": plan})
    return rows


def pareto(rows: list[dict]) -> list[dict]:
    pts = sorted(rows, key=lambda r: (r["plan"].latency_ms, r["plan"].energy_mj))
    front, best_e = [], float("inf")
    for r in pts:
        if r["plan"].energy_mj < best_e - 1e-9:
            front.append(r)
            best_e = r["plan"].energy_mj
    return front


def svg(results: dict[str, list[dict]], title: str) -> str:
    w, h, m = 760, 480, 70
    allp = [r["plan"] for rows in results.values() for r in rows]
    xmax = max(p.latency_ms for p in allp) * 1.1
    ymax = max(p.energy_mj for p in allp) * 1.1
    sx = lambda v: m + v / xmax * (w - 2 * m)
    sy = lambda v: h - m - v / ymax * (h - 2 * m)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{m}" y="24" font-size="15" font-weight="bold">{escape(title)}</text>',
           f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
           f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
           f'<text x="{w / 2 - 80}" y="{h - 25}">estimated latency per token (ms)</text>',
           f'<text x="18" y="{h / 2 + 60}" transform="rotate(-90 18 {h / 2 + 60})">estimated energy per token (mJ)</text>']
    for i in range(6):
        xv, yv = xmax * i / 5, ymax * i / 5
        out.append(f'<text x="{sx(xv) - 10:.0f}" y="{h - m + 16}" font-size="10">{xv:.0f}</text>')
        out.append(f'<text x="{m - 40}" y="{sy(yv) + 4:.0f}" font-size="10">{yv:.0f}</text>')
    for k, (name, rows) in enumerate(results.items()):
        c = COLOURS[k % len(COLOURS)]
        for r in rows:
            p = r["plan"]
            out.append(f'<circle cx="{sx(p.latency_ms):.1f}" cy="{sy(p.energy_mj):.1f}" r="3" fill="none" stroke="{c}">'
                       f'<title>{escape(name)}: {escape(r["label"])}</title></circle>')
        front = pareto(rows)
        pts = " ".join(f"{sx(r['plan'].latency_ms):.1f},{sy(r['plan'].energy_mj):.1f}" for r in front)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"/>')
        for r in front:
            out.append(f'<circle cx="{sx(r["plan"].latency_ms):.1f}" cy="{sy(r["plan"].energy_mj):.1f}" r="4" fill="{c}"/>')
        out.append(f'<rect x="{w - 250}" y="{m + 18 * k}" width="12" height="12" fill="{c}"/>'
                   f'<text x="{w - 232}" y="{m + 10 + 18 * k}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", nargs="+", default=["snapdragon-8-gen3", "dimensity-9300", "raspberry-pi-5"])
    ap.add_argument("--checkpoint", type=Path, help="use this checkpoint's config instead of the GLM-edge-1.5B-class shape")
    ap.add_argument("--dtype", default="int4", help="layer weight dtype (head int8, embeddings f32 as with --quant)")
    ap.add_argument("--context", type=int, default=2048, help="KV-cache capacity (costs assume the profile's context_tokens)")
    ap.add_argument("-o", "--output", type=Path, default=Path("pareto.svg"))
    args = ap.parse_args()
    cfg = read_hf_config(args.checkpoint / "config.json") if args.checkpoint else GLM_EDGE_1_5B_CLASS
    dtypes = quant_dtypes(args.dtype) if args.dtype in ("int8", "int4") else {"default": args.dtype}
    results = {}
    print("| profile | plan | ms/token | mJ/token | W | prefill 128 ms | devices | on the front |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.profiles:
        rows = sweep(cfg, name, dtypes, args.context)
        results[name] = rows
        front = {id(r) for r in pareto(rows)}
        for r in rows:
            p = r["plan"]
            print(f"| {name} | {r['label']} | {p.latency_ms:.1f} | {p.energy_mj:.0f} | {p.avg_power_w:.2f} | {p.prefill_ms:.0f} | "
                  f"{'+'.join(p.devices_used)} | {'yes' if id(r) in front else ''} |")
    print()
    print("| profile | plan | decode ms/token | prefill 128 ms | average W | mJ/token | devices |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        cpu = rows[0]["plan"]
        fastest = min(rows, key=lambda r: (r["plan"].latency_ms, r["plan"].energy_mj))
        frugal = min(rows, key=lambda r: (r["plan"].energy_mj, r["plan"].latency_ms))
        for label, p in (("cpu only", cpu), (f"fastest ({fastest['label']})", fastest["plan"]),
                         (f"least energy ({frugal['label']})", frugal["plan"])):
            print(f"| {name} | {label} | {p.latency_ms:.1f} | {p.prefill_ms:.0f} | {p.avg_power_w:.2f} | {p.energy_mj:.0f} | "
                  f"{'+'.join(p.devices_used)} |")
        best = fastest["plan"]
        print(f"| {name} | fastest vs cpu only | {cpu.latency_ms / best.latency_ms:.2f}x | {cpu.prefill_ms / best.prefill_ms:.1f}x | "
              f"{100 * (1 - best.avg_power_w / cpu.avg_power_w):.0f}% less power | | |")
    args.output.write_text(svg(results, f"latency-energy estimates, {cfg.num_layers}-layer {cfg.hidden_size}-wide model, {args.dtype}"))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
