"""Estimated vs measured latency of whole bundles: does the scheduler's cost model hold?

The cost model's numbers come from micro-benchmarks only (`iree_glm.calibrate`: call and
dispatch overhead, bandwidth, matmul and attention throughput, host upload); whole models are
what this tool checks them against, never what they are fitted to. On a shared machine the
absolute speed moves with the load, so the tool interleaves the two in one run: each round
measures the micro-benchmarks of every driver the bundles use, then each bundle's prefill of
`--prompt` tokens and the median of `--steps` decode steps. The estimate for a bundle is its
own placement (plan.json) costed with the median micro-benchmark numbers of all rounds; the
estimate the bundle was built with (the shipped profile's numbers) is printed beside it.

    python tools/calibrate_estimate.py BUNDLE [BUNDLE ...] [--rounds 5] [--steps 32] [--prompt 128]
                                       [--profile FILE] [--allow-stand-in]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

from iree_glm.bundle.manifest import read_manifest
from iree_glm.tuning.calibrate import Benchmarks, median_of_rounds
from iree_glm.bundle.model_config import ModelConfig
from iree_glm.planner.profile import Link, Profile, load_profile
from iree_glm.runtime import Session
from iree_glm.runtime.pipeline import PipelineSession, is_multi_device
from iree_glm.runtime.request import RequestState
from iree_glm.runtime.sampling import Sampler, SamplingParams
from iree_glm.planner.scheduler import PartitionPlan, estimate_placement, quant_dtypes

DEVICE_KEYS = ("call_overhead_us", "dispatch_overhead_us", "memory_bandwidth_gbs", "cache_mb", "cache_bandwidth_gbs", "attention_gflops", "fresh_memory_gbs")


def measure_bundle(session, prompt_len: int, steps: int) -> dict:
    """One prefill of `prompt_len` tokens, then `steps` decode steps: times in ms."""
    prompt = [(i * 7919) % session.config.vocab_size for i in range(1, prompt_len + 1)]
    state = RequestState(prompt, steps + 1, Sampler(SamplingParams()), set(), session.max_context, None, ())
    pipeline = isinstance(session, PipelineSession)
    cache = session.new_cache()
    t = time.perf_counter()
    logits = session.prefill(state, cache)
    prefill = time.perf_counter() - t
    if pipeline:
        session.stats.handoff_seconds = 0.0
    pos, times = len(prompt), []
    for _ in range(min(steps, session.max_context - pos - 1)):
        token = int(logits.argmax())
        t = time.perf_counter()
        out = session.decode([token], [pos], cache)
        times.append(time.perf_counter() - t)
        logits, pos = out[0], pos + 1
    out = {"prefill_ms": prefill * 1e3, "decode_ms": statistics.median(times) * 1e3}
    if pipeline:
        out["handoff_ms"] = session.stats.handoff_seconds / len(times) * 1e3
    return out


def calibrated(profile: Profile, measured: dict[str, dict]) -> Profile:
    """`profile` with the numbers of every device whose driver was measured replaced."""
    devices = []
    for d in profile.devices:
        m = measured.get(d.hal_driver)
        if m is None:
            devices.append(d)
            continue
        peaks = {dt: m["peak_gflops"].get(dt, v) for dt, v in d.peak_gflops.items()}
        devices.append(replace(d, peak_gflops=peaks, **{k: m[k] for k in DEVICE_KEYS if k in m}))
    links = []
    for l in profile.links:
        other = next(d for d in profile.devices if d.name in (l.a, l.b) and d.name != profile.host.name)
        m = measured.get(other.hal_driver)
        links.append(Link(l.a, l.b, m["link_bandwidth_gbs"], m["link_latency_us"], l.shared_memory) if m else l)
    return replace(profile, devices=tuple(devices), links=tuple(links))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundles", type=Path, nargs="+")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=32, help="decode steps per round (median)")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens of the timed prefill")
    ap.add_argument("--profile", help="profile to take the devices from (default: each bundle's own)")
    ap.add_argument("--allow-stand-in", action="store_true")
    args = ap.parse_args()
    load_start = os.getloadavg()
    bundles = []
    for path in args.bundles:
        manifest = read_manifest(path, verify=False)
        plan = PartitionPlan.from_json((path / "plan.json").read_text())
        if is_multi_device(manifest):
            session = PipelineSession.load(path, verify=False, allow_stand_in=args.allow_stand_in)
        else:
            session = Session.load(path, verify=False)
        profile = load_profile(args.profile or manifest.profile)
        bundles.append(dict(path=path, manifest=manifest, plan=plan, session=session, profile=profile, runs=[]))
    drivers = sorted({d.hal_driver for b in bundles for d in b["profile"].devices if d.name in b["plan"].devices_used
                      and d.name not in getattr(b["session"], "stand_ins", {})})
    benches = {drv: Benchmarks(drv) for drv in drivers}
    micro: dict[str, list[dict]] = {drv: [] for drv in drivers}
    for r in range(args.rounds):
        for drv, bench in benches.items():
            micro[drv].append(bench.run(repeats=3))
        for b in bundles:
            b["runs"].append(measure_bundle(b["session"], args.prompt, args.steps))
    load_end = os.getloadavg()
    measured = {drv: median_of_rounds(rows) for drv, rows in micro.items()}

    print(f"load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end ({os.cpu_count()} cores); "
          f"{args.rounds} interleaved rounds")
    for drv, m in measured.items():
        print(f"micro-benchmarks, {drv} (medians): call {m['call_overhead_us']:.0f} us, dispatch {m['dispatch_overhead_us']:.1f} us, "
              f"bandwidth {m['memory_bandwidth_gbs']:.1f} GB/s (cache {m['cache_bandwidth_gbs']:.1f}), "
              f"fresh memory {m['fresh_memory_gbs']:.1f} GB/s, matmul f32 {m['peak_gflops']['f32']:.1f} GFLOP/s, attention {m.get('attention_gflops', 'n/a')} GFLOP/s")
    print()
    print(f"| bundle | devices | params | prefill {args.prompt} est / measured ms | ratio | decode est / measured ms | ratio | "
          f"shipped-profile est prefill / decode ms | transfer share est / measured |")
    print("|---|---|---|---|---|---|---|---|---|")
    for b in bundles:
        cfg = b["manifest"].model
        quant = b["manifest"].options.quant
        dtypes = quant_dtypes(quant.mode, quant.head or "int8", quant.embeddings or "none")
        placement = [p.device for p in b["plan"].parts]
        capacity = b["manifest"].max_context
        profile = b["profile"]
        # The median decode step has the prompt and half the steps in its cache (attended rounded up).
        in_use = min(capacity, args.prompt + args.steps // 2 + 1)
        est = estimate_placement(cfg, calibrated(profile, measured), placement, dtypes, capacity, in_use, args.prompt)
        shipped = estimate_placement(cfg, profile, placement, dtypes, capacity, in_use, args.prompt)
        pre = statistics.median(r["prefill_ms"] for r in b["runs"])
        dec = statistics.median(r["decode_ms"] for r in b["runs"])
        share = "-"
        if "handoff_ms" in b["runs"][0]:
            hand = statistics.median(r["handoff_ms"] for r in b["runs"])
            share = f"{100 * est['transfer_ms'] / est['decode_ms']:.1f}% / {100 * hand / dec:.1f}%"
        params = _params(cfg)
        print(f"| {b['path'].name} | {'+'.join(b['plan'].devices_used)} | {params / 1e6:.1f}M | {est['prefill_ms']:.1f} / {pre:.1f} | "
              f"{pre / est['prefill_ms']:.2f} | {est['decode_ms']:.2f} / {dec:.2f} | {dec / est['decode_ms']:.2f} | "
              f"{shipped['prefill_ms']:.1f} / {shipped['decode_ms']:.2f} | {share} |")
        stand = getattr(b["session"], "stand_ins", {})
        if stand:
            print(f"[STAND-IN] {b['path'].name}: {', '.join(f'{d} ran on {drv}' for d, drv in stand.items())}")


def _params(cfg: ModelConfig) -> int:
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    layer = cfg.hidden_size * (q + 2 * kv) + q * cfg.hidden_size + 3 * cfg.hidden_size * cfg.intermediate_size
    return 2 * cfg.vocab_size * cfg.hidden_size + cfg.num_layers * layer


if __name__ == "__main__":
    main()
