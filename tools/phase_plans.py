"""Estimated time to first token and decode speed with one placement vs plans per phase
(scheduler estimates only: no phone is here).

For each profile, GLM-edge-class shapes and weight formats: the single plan (the decode
placement, as bundles run today) against the phase plan (prefill where compute is, the KV cache
handed over), for a 512-token prompt.

    python tools/phase_plans.py [--profiles snapdragon-8-gen3 dimensity-9300 raspberry-pi-5] [--prompt 512]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pareto import GLM_EDGE_1_5B_CLASS  # noqa: E402

from iree_glm.bundle.model_config import ModelConfig  # noqa: E402
from iree_glm.planner.phases import plan_phases  # noqa: E402
from iree_glm.planner.profile import load_profile  # noqa: E402
from iree_glm.planner.scheduler import quant_dtypes  # noqa: E402

# A 4B-class shape of the same family (hidden 3072, 32 layers, GQA 24/6, FFN 8192, vocab 59264).
GLM_EDGE_4B_CLASS = ModelConfig(family="glm4", vocab_size=59264, hidden_size=3072, intermediate_size=8192,
                                num_layers=32, num_heads=24, num_kv_heads=6, head_dim=128)
SHAPES = {"1.5B-class": GLM_EDGE_1_5B_CLASS, "4B-class": GLM_EDGE_4B_CLASS}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="+", default=["snapdragon-8-gen3", "dimensity-9300", "raspberry-pi-5"])
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--context", type=int, default=2048)
    args = ap.parse_args()
    print("| profile | shape | weights | single plan: TTFT ms | phase plan: prefill on | TTFT ms (hand-off ms) | TTFT gain | decode tok/s (both) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.profiles:
        profile = load_profile(name)
        for shape, cfg in SHAPES.items():
            for mode in ("int8", "int4"):
                pp = plan_phases(cfg, profile, quant_dtypes(mode), args.context, prompt_tokens=args.prompt)
                where = ", ".join(sorted(set(pp.prefill_devices) - {profile.host.name})) or profile.host.name
                print(f"| {name} | {shape} | {mode} | {pp.single_prefill_ms:.0f} | {where if pp.split else '(one placement)'} | "
                      f"{pp.ttft_ms:.0f} ({pp.handoff_ms:.1f}) | {pp.speedup:.2f}x | {1e3 / pp.decode.latency_ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
