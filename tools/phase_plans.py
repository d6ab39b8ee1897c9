"""Estimated time to first token and decode speed with one placement vs plans per phase
(scheduler estimates only: no phone is here).

For each profile, GLM-edge-class shapes and weight formats: the single plan (the decode
placement, as bundles run today) against the phase plan (prefill where compute is, the KV cache
handed over), for a 512-token prompt; beside them the best one placement for the first token
(the prefill placement running both phases: what a split gains over it is decode speed), and the
decode options a bundle would carry as plans of their own (device, tok/s, W). The last column is
a bound no prefill split can beat: the layers pipelined over every device that can run them, each
taking a share of the layers in proportion to its speed, with no bubbles, no chunk overheads and
no transfers (an ideal that no runtime reaches), the embeddings and head on their fastest device
(`planner.phases.ideal_prefill_ms`).

`--gpu-int4 SHARE` is a what-if: each GPU without int4 gets it at SHARE x its int8 rate (the
shipped profiles leave int4 off the GPUs because IREE's Vulkan codegen does not compile our int4
form, see docs/phases.md).

    python tools/phase_plans.py [--profiles snapdragon-8-gen3 dimensity-9300 raspberry-pi-5] [--prompt 512] [--gpu-int4 0.28]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pareto import GLM_EDGE_1_5B_CLASS  # noqa: E402

from iree_glm.bundle.model_config import ModelConfig  # noqa: E402
from iree_glm.planner.phases import ideal_prefill_ms, plan_phases  # noqa: E402
from iree_glm.planner.profile import Profile, load_profile  # noqa: E402
from iree_glm.planner.scheduler import estimate_placement, quant_dtypes  # noqa: E402

# A 4B-class shape of the same family (hidden 3072, 32 layers, GQA 24/6, FFN 8192, vocab 59264).
GLM_EDGE_4B_CLASS = ModelConfig(family="glm4", vocab_size=59264, hidden_size=3072, intermediate_size=8192,
                                num_layers=32, num_heads=24, num_kv_heads=6, head_dim=128)
SHAPES = {"1.5B-class": GLM_EDGE_1_5B_CLASS, "4B-class": GLM_EDGE_4B_CLASS}


def with_gpu_int4(profile: Profile, share: float) -> Profile:
    """`profile` with int4 on each GPU that lacks it, at `share` x its int8 rate (a what-if)."""
    devices = [replace(d, dtypes=(*d.dtypes, "int4"), peak_gflops={**d.peak_gflops, "int4": share * d.peak_gflops["int8"]})
               if d.kind == "gpu" and "int4" not in d.dtypes and "int8" in d.peak_gflops else d for d in profile.devices]
    return replace(profile, devices=devices)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="+", default=["snapdragon-8-gen3", "dimensity-9300", "raspberry-pi-5"])
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--gpu-int4", type=float, help="what-if: GPUs run int4 at this share of their int8 rate")
    args = ap.parse_args()
    print("| profile | shape | weights | single plan: TTFT ms, tok/s | best one placement for TTFT: on, TTFT ms, tok/s | "
          "phase plan: prefill on | TTFT ms (hand-off) | tok/s | gain vs single / vs best one placement | "
          "decode options: tok/s, W | ideal pipeline over all devices: TTFT ms, gain vs best one placement |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.profiles:
        profile = load_profile(name)
        if args.gpu_int4 is not None:
            profile = with_gpu_int4(profile, args.gpu_int4)
        for shape, cfg in SHAPES.items():
            for mode in ("int8", "int4"):
                dtypes = quant_dtypes(mode)
                pp = plan_phases(cfg, profile, dtypes, args.context, prompt_tokens=args.prompt)
                best = estimate_placement(cfg, profile, pp.prefill_devices, dtypes, args.context, prefill_tokens=pp.prompt_tokens)
                on = lambda devices: ", ".join(sorted(set(devices) - {profile.host.name})) or profile.host.name  # noqa: E731
                ideal = ideal_prefill_ms(cfg, profile, dtypes, args.context, args.prompt)
                options = "; ".join(f"{o.device} {1e3 / o.decode_ms:.1f}, {o.power_w:.1f}" for o in pp.decode_options) or "-"
                print(f"| {name} | {shape} | {mode} | {pp.single_prefill_ms:.0f}, {1e3 / pp.decode.latency_ms:.1f} | "
                      f"{on(pp.prefill_devices)}, {best['prefill_ms']:.0f}, {1e3 / best['decode_ms']:.1f} | "
                      f"{on(pp.prefill_devices) if pp.split else '(one placement)'} | {pp.ttft_ms:.0f} ({pp.handoff_ms:.1f}) | "
                      f"{1e3 / pp.decode.latency_ms:.1f} | {pp.speedup:.2f}x / {best['prefill_ms'] / pp.ttft_ms:.2f}x | {options} | "
                      f"{ideal:.0f}, {best['prefill_ms'] / ideal:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
