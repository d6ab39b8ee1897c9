"""`python -m iree_glm.profile validate FILE | show FILE | calibrate --driver DRIVER -o FILE`.

validate: check a profile (errors name the key; drivers absent on this machine are warnings,
since profiles describe other machines). show: the profile and the plan it gives the default
model. calibrate: measure a HAL device present here with small IREE benchmarks and write a
profile (the benchmarks live in `tuning/calibrate.py`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from iree_glm.cli.args import ArgumentParser
from iree_glm.errors import run_cli
from iree_glm.validation import option
from iree_glm.errors import UserError
from iree_glm.planner.profile import Profile
from iree_glm.runtime.devices import driver_available


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m iree_glm.profile", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check a profile file (or shipped profile name)")
    v.add_argument("profile")
    s = sub.add_parser("show", help="print a profile and the plan it gives a model")
    s.add_argument("profile")
    s.add_argument("--checkpoint", type=Path, help="plan for this checkpoint's config (default: the built-in model)")
    s.add_argument("--dtype", default="f32", help="weight dtype for the plan (f32, f16, bf16, int8, int4)")
    s.add_argument("--max-context", type=option(int, "--max-context", min=2), default=1024)
    c = sub.add_parser("calibrate", help="measure a HAL device here and write a profile")
    c.add_argument("--driver", required=True, help="HAL driver to measure (local-task, vulkan, ...)")
    c.add_argument("-o", "--output", type=Path, required=True, help="profile file to write")
    c.add_argument("--name", help="profile name (default: the output file's stem)")
    c.add_argument("--repeats", type=option(int, "--repeats", min=1), default=5, help="timed runs per benchmark (median)")
    c.add_argument("--lowering", action="store_true",
                   help="llvm-cpu: also choose the lowering flags (data tiling, ukernels) and policy.prefill_chunk by timing prefill here")
    c.add_argument("--lowering-checkpoint", type=Path, help="with --lowering: time a model of this checkpoint's shape (default: the built-in model)")
    c.add_argument("--lowering-layers", type=option(int, "--lowering-layers", min=1), default=2, help="with --lowering: layers of that model to build (default 2)")
    c.add_argument("--lowering-prompt", type=option(int, "--lowering-prompt", min=1), default=512, help="with --lowering: prompt tokens to prefill (default 512)")
    c.add_argument("--rounds", type=option(int, "--rounds", min=1), default=3, help="measure every benchmark this many times; the profile keeps the medians")
    return p.parse_args(argv)


def _validate(name: str) -> int:
    from iree_glm.planner.profile import load_profile

    profile = load_profile(name)
    for w in availability_warnings(profile):
        print(f"warning: {w}", file=sys.stderr)
    kinds = ", ".join(f"{d.name} ({d.kind}, {d.hal_driver})" for d in profile.devices)
    print(f"{profile.source}: ok: profile '{profile.name}', devices {kinds}, objective {profile.policy.objective}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from iree_glm.frontend import default_model
    from iree_glm.frontend.hf_config import read_hf_config
    from iree_glm.planner.phases import plan_phases
    from iree_glm.planner.report import phase_report, text_report
    from iree_glm.planner.profile import load_profile
    from iree_glm.planner.scheduler import plan_partition

    profile = load_profile(args.profile)
    print(f"profile '{profile.name}' ({profile.source}): {profile.description}")
    for d in profile.devices:
        peaks = ", ".join(f"{k} {v:g}" for k, v in d.peak_gflops.items())
        print(f"  {d.name}: {d.kind}, driver {d.hal_driver}, backend {d.backend}; GFLOP/s {peaks}; "
              f"{d.memory_bandwidth_gbs:g} GB/s, {d.memory_gb:g} GB, {d.idle_power_w:g}-{d.active_power_w:g} W"
              + (", stand-in allowed" if d.allow_stand_in else "")
              + (f"; activations {d.activation_dtype}" if d.kind == "cpu" else ""))
    for l in profile.links:
        print(f"  link {l.a} <-> {l.b}: {l.bandwidth_gbs:g} GB/s, {l.latency_us:g} us" + (", shared memory" if l.shared_memory else ""))
    pol = profile.policy
    print(f"  policy: objective {pol.objective}, power budget {pol.power_budget_w or 'none'}, reserve {pol.memory_reserve_gb:g} GB"
          + (f", prefix cache {pol.prefix_cache_mb:g} MiB" if pol.prefix_cache_mb is not None else "")
          + (f", sparse attention {pol.sparse_attention}" if pol.sparse_attention else "")
          + (f", decode batch sizes {','.join(map(str, pol.decode_batch_sizes))}" if pol.decode_batch_sizes else "")
          + (f", prefill chunk {pol.prefill_chunk or 'off (whole prompt)'}" if pol.prefill_chunk is not None else ""))
    for w in availability_warnings(profile):
        print(f"warning: {w}", file=sys.stderr)
    cfg = read_hf_config(args.checkpoint / "config.json") if args.checkpoint else default_model.CONFIG
    print(text_report(plan_partition(cfg, profile, args.dtype, capacity=args.max_context)))
    print(phase_report(plan_phases(cfg, profile, args.dtype, capacity=args.max_context)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "validate":
        return _validate(args.profile)
    if args.command == "show":
        return _show(args)
    from iree_glm.tuning.calibrate import calibrate

    if args.lowering and (args.lowering_layers < 1 or args.lowering_prompt < 2):
        raise UserError("--lowering-layers must be >= 1 and --lowering-prompt >= 2")
    if args.lowering_checkpoint is not None and not (args.lowering_checkpoint / "config.json").is_file():
        raise UserError(f"--lowering-checkpoint {args.lowering_checkpoint}: no config.json there")
    lowering = None
    if args.lowering:
        lowering = dict(checkpoint=args.lowering_checkpoint, layers=args.lowering_layers, prompt_len=args.lowering_prompt)
    if args.repeats < 1 or args.rounds < 1:
        raise UserError(f"--repeats and --rounds must be at least 1 (got {args.repeats}, {args.rounds})")
    text = calibrate(args.driver, args.name or args.output.stem, args.repeats, progress=lambda m: print(m, file=sys.stderr),
                     lowering=lowering, rounds=args.rounds)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


def availability_warnings(profile: Profile) -> list[str]:
    """One line per device whose HAL driver is absent here (profiles may describe other machines)."""
    out = []
    for d in profile.devices:
        if not driver_available(d.hal_driver):
            extra = "; runs need --allow-stand-in (CPU stand-in)" if d.allow_stand_in else ""
            out.append(f"{profile.source}: device '{d.name}': HAL driver '{d.hal_driver}' is not available on this machine{extra}")
    return out


if __name__ == "__main__":
    sys.exit(run_cli(main))
