"""Estimated vs measured decode latency per token of a bundle (the scheduler's plan vs a run).

Loads a bundle (multi-device bundles with --allow-stand-in if needed), prefills a short
prompt, then times `--steps` decode steps (median, each step = every stage's call plus the
hand-offs and the logits' copy to the host) and compares with the plan's estimate in
plan.json. For multi-device bundles it also reports the measured hand-off share.
Run each bundle in its own process; the machine should be otherwise idle.

    python tools/calibrate_estimate.py BUNDLE [--steps 64] [--allow-stand-in]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from iree_glm.bundle import read_manifest
from iree_glm.runtime import Session
from iree_glm.runtime.pipeline import PipelineSession, is_multi_device
from iree_glm.runtime.request import RequestState
from iree_glm.runtime.sampling import Sampler, SamplingParams
from iree_glm.scheduler import PartitionPlan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--allow-stand-in", action="store_true")
    args = ap.parse_args()
    manifest = read_manifest(args.bundle, verify=False)
    plan = PartitionPlan.from_json((args.bundle / "plan.json").read_text())
    if is_multi_device(manifest):
        session = PipelineSession.load(args.bundle, verify=False, allow_stand_in=args.allow_stand_in)
    else:
        session = Session.load(args.bundle, verify=False)
    prompt = list(range(1, 9))
    state = RequestState(prompt, args.steps + 1, Sampler(SamplingParams()), set(), session.max_context, None, ())
    logits, k, v = session.prefill(state)
    pos, times = len(prompt), []
    if isinstance(session, PipelineSession):
        session.stats.handoff_seconds = 0.0
        session.stats.stage_seconds = {d: 0.0 for d in session.stats.stage_seconds}
    for _ in range(min(args.steps, session.max_context - pos - 1)):
        token = int(logits.argmax())
        t = time.perf_counter()
        out, k, v = session.decode([token], [pos], k, v)
        times.append(time.perf_counter() - t)
        logits, pos = out[0], pos + 1
    measured = statistics.median(times) * 1e3
    print(f"bundle {args.bundle.name}: profile {plan.profile}, devices {'+'.join(plan.devices_used)}, "
          f"context {manifest.max_context} (plan assumes {plan.context_tokens} cached tokens read per step)")
    print(f"decode per token: estimated {plan.latency_ms:.3f} ms, measured median {measured:.3f} ms "
          f"over {len(times)} steps (measured/estimated {measured / plan.latency_ms:.2f})")
    if isinstance(session, PipelineSession):
        total = sum(times)
        share = 100 * session.stats.handoff_seconds / total
        stages = ", ".join(f"{d} {s / len(times) * 1e3:.2f} ms" for d, s in session.stats.stage_seconds.items())
        print(f"per step: {stages}; hand-offs {session.stats.handoff_seconds / len(times) * 1e3:.3f} ms "
              f"({share:.1f}% of the step; plan estimated {100 * plan.transfer_ms / plan.latency_ms:.1f}%)")
        if session.stand_ins:
            print(f"[STAND-IN] {', '.join(f'{d} ran on {drv}' for d, drv in session.stand_ins.items())}")


if __name__ == "__main__":
    main()
