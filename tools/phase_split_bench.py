"""Phase-split plans measured on CPU + lavapipe: hand-off share of time to first token, estimate vs
measured per phase, and what a plan switch costs.

Builds (or reuses) a bundle of the default model (or `--checkpoint`) from host-cpu-vulkan with
lavapipe declared fast at matmuls but call-heavy and frugal (3 W), so the planner prefills on
lavapipe and decodes on the CPU, and carries a power-saving `decode-lavapipe` plan (both phases
on lavapipe); the bundle carries every plan. Each plan then runs in its own process: per prompt
length, `--runs` prefills into a fresh KV row (no prefix cache) and `--steps` decode steps,
medians. The estimates are the cost model's for the same placements, with the numbers the
bundle was built with (declared) and with the shipped host-cpu-vulkan profile's calibrated
numbers. Switches are timed in a process of their own: `use_plan` between plans that decode on
the same module (no KV moves), and a switch between decode devices mid-generation (CPU ->
lavapipe -> CPU) per conversation length (`--switch-prompts`: a short and a long one): the KV
move (bytes, ms; beside a copy of the whole buffers, as moves were before they copied only the
positions in use) and the first step after it, against one decode step and the measured KV
hand-off, and beside the same pauses without a switch (a first step after the other device's
leg, nothing moved). `--kv-move` times the move alone at the GLM-edge-1.5B shape: there, and
back into the CPU buffers the move kept or into new ones. Every plan's greedy tokens must be equal, and the switched generation's equal to the
unswitched one's (exit 1 otherwise). On a machine with a real Vulkan GPU the same command
builds and runs the plans there (the check a lent GPU machine should run).

    python tools/phase_split_bench.py [--bundle DIR] [--checkpoint CKPT] [--prompts 32,96] [--runs 5] [--steps 16]
        [--switch-prompts 16,448] [--switch-only]
    python tools/phase_split_bench.py --kv-move 3:2048 --switch-prompts 512,2048 [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (tools/bench.py: the CPU's name and flags)


def write_profile(path: Path) -> None:
    """host-cpu-vulkan with a CPU declared slow at matmuls and lavapipe declared fast but call-heavy and frugal."""
    sys.path.insert(0, str(ROOT))
    from tests.helpers import declared_lavapipe_profile

    declared_lavapipe_profile(path, "plans-bench", 3.0, slow_cpu=True)


def child(bundle: Path, plan: str, prompts: list[int], runs: int, steps: int) -> dict:
    """Measure one plan in this process (JSON on stdout)."""
    import numpy as np

    from iree_glm.runtime import Session
    from iree_glm.runtime.request import RequestState
    from iree_glm.runtime.sampling import Sampler, SamplingParams

    s = Session.load(bundle, plan=plan)
    placement = s.plans.placement()
    out = {"plan": plan, "prompts": {}}
    for n in prompts:
        ids = [(i * 7919) % s.config.vocab_size for i in range(1, n + 1)]
        ttft, handoff, device, decode = [], [], [], []
        for _ in range(runs + 1):  # the first run warms up
            state = RequestState(ids, steps + 1, Sampler(SamplingParams()), set(), s.max_context, None, ())
            cache = s.new_cache()
            h0 = placement.stats.handoff_seconds if placement else 0.0
            d0 = placement.stats.prefill_seconds if placement else 0.0
            t = time.perf_counter()
            logits = s.prefill(state, cache)
            token = int(np.argmax(logits))
            ttft.append(time.perf_counter() - t)
            handoff.append((placement.stats.handoff_seconds - h0) if placement else 0.0)
            device.append((placement.stats.prefill_seconds - d0) if placement else ttft[-1])
            pos, times = n, []
            for _ in range(steps):
                t = time.perf_counter()
                token = int(np.argmax(s.decode([token], [pos], cache)[0]))
                times.append(time.perf_counter() - t)
                pos += 1
            decode.append(statistics.median(times))
        med = lambda xs: statistics.median(xs[1:]) * 1e3  # noqa: E731
        out["prompts"][n] = {"ttft_ms": med(ttft), "handoff_ms": med(handoff), "prefill_device_ms": med(device),
                             "decode_ms": med(decode)}
    out["tokens"] = s.generate([(i * 7919) % s.config.vocab_size for i in range(1, prompts[-1] + 1)],
                               max_new_tokens=3 * steps).generated_ids
    same_module = [name for name, e in s.plans.entries.items() if name != plan and e.decode_module is None]
    if placement is not None and same_module:
        t = time.perf_counter()
        for _ in range(1000):
            s.use_plan(same_module[0])
            s.use_plan(plan)
        out["switch_us"] = (time.perf_counter() - t) / 2000 * 1e6
    return out


def switch_child(bundle: Path, prompts: list[int], runs: int, steps: int) -> dict:
    """Per prompt length (a short and a long conversation): decode on the main module, switch to
    the decode-device plan between two steps, then back: the KV move (bytes, ms), a copy of the
    whole buffers as the move was before it copied only the positions in use, and the first step
    after each switch against the steps around it. Then the same pauses without a switch (the
    controls): a second conversation that lives on the decode device takes `steps` steps there
    (its first step follows the CPU's leg, as the switch's did, but moves nothing), and the first
    conversation goes on on the CPU (its first step follows that leg on the other device). The
    switched tokens are checked against the same generation without a switch (JSON on stdout)."""
    import numpy as np

    from iree_glm.runtime import Session
    from iree_glm.runtime.request import RequestState
    from iree_glm.runtime.sampling import Sampler, SamplingParams

    s = Session.load(bundle, plan="one-placement")
    other = next(name for name, e in s.plans.entries.items() if e.decode_module is not None)
    out = {"plan": other, "prompts": {}}

    def started(ids: list[int], new_tokens: int):
        state = RequestState(ids, new_tokens, Sampler(SamplingParams()), set(), s.max_context, None, ())
        cache = s.new_cache()
        return cache, int(np.argmax(s.prefill(state, cache)))

    for prompt in prompts:
        ids = [(i * 7919) % s.config.vocab_size for i in range(1, prompt + 1)]
        s.use_plan("one-placement")
        unswitched = s.generate(ids, max_new_tokens=4 * steps, stop_ids=()).generated_ids  # past EOS, as the runs go
        s.use_plan(other)
        control = dict(zip(("cache", "token"), started(ids[:16], (runs + 1) * steps + 1)), pos=min(16, prompt))
        rows = {"there": [], "back": [], "ctl_there": [], "ctl_back": []}
        tokens = []
        for _ in range(runs + 1):  # the first run warms up
            s.use_plan("one-placement")
            cache, token = started(ids, 4 * steps + 1)
            main, got = {"cache": cache, "token": token, "pos": prompt}, []
            legs = (("cpu", None, main), ("there", other, main), ("back", "one-placement", main),
                    ("ctl_there", other, control), ("ctl_back", "one-placement", main))
            for leg, plan, conv in legs:
                if plan is not None:
                    s.use_plan(plan)
                moves, times = s.kv_moves.moves, []
                for _ in range(steps):
                    if conv is main:
                        got.append(conv["token"])
                    t = time.perf_counter()
                    conv["token"] = int(np.argmax(s.decode([conv["token"]], [conv["pos"]], conv["cache"])[0]))
                    times.append(time.perf_counter() - t)
                    conv["pos"] += 1
                if leg in ("there", "back"):
                    _, _, nbytes, seconds = s.kv_moves.history[-1]
                    rows[leg].append((times[0], seconds, statistics.median(times[1:]), nbytes, _whole_copy(s, cache)))
                elif leg != "cpu":
                    assert s.kv_moves.moves == moves, "a control leg moved a cache"
                    rows[leg].append((times[0], 0.0, statistics.median(times[1:]), 0, 0.0))
            tokens = got
        r = {"tokens_equal": tokens == unswitched[: len(tokens)], "cache_bytes": sum(b.to_host().nbytes for b in cache.buffers)}
        for leg, xs in rows.items():
            xs = xs[1:]
            r[leg] = {"first_step_ms": statistics.median(x[0] for x in xs) * 1e3, "move_ms": statistics.median(x[1] for x in xs) * 1e3,
                      "step_ms": statistics.median(x[2] for x in xs) * 1e3, "bytes": xs[0][3],
                      "whole_ms": statistics.median(x[4] for x in xs) * 1e3}
        out["prompts"][prompt] = r
    return out


def _whole_copy(session, cache) -> float:
    """Seconds to copy every buffer of `cache` whole onto its own device, as a move did before it
    copied only the positions in use (a mapped read, one host copy into a new allocation)."""
    from iree_glm.runtime.kv_cache import unset_array

    t = time.perf_counter()
    copies = [unset_array(session._decoder.device, b.shape, cache.dtype, session._decoder.cache_memory) for b in cache.buffers]
    for copy, b in zip(copies, cache.buffers):  # all held at once, as the move held them
        copy.to_host()[...] = b.to_host()
    return time.perf_counter() - t


GLM_EDGE_15B_KV = (28, 4, 128)  # layers, KV heads, head dim of the GLM-edge-1.5B shape (112 KiB per position)


def kv_move(rows: int, capacity: int, cases: list[list[int]], runs: int, steps: int) -> int:
    """The KV move alone at the GLM-edge-1.5B shape, no model: a cache of `rows` rows x `capacity`
    positions on the CPU (local-task) moved to lavapipe, `steps` decode steps' positions written
    there per live row, and moved back: into the CPU buffers the move kept (as sessions do) and
    into new ones (as without keeping; its allocation timed alone too), per case (the positions in
    use of each row), against a copy of the whole buffers; medians of `runs`. Prints a table."""
    import numpy as np

    from iree_glm.runtime.devices import hal_device
    from iree_glm.runtime.kv_cache import KVCache, mappable_memory, unset_array

    layers, heads, dim = GLM_EDGE_15B_KV
    cpu, gpu = hal_device("local-task"), hal_device("vulkan")
    print(f"KV move at the GLM-edge-1.5B shape ({layers} layers x {heads} KV heads x {dim}), {rows} rows x {capacity} positions "
          f"({2 * layers * rows * heads * capacity * dim * 4 / 2**20:.0f} MiB); {steps} steps written per live row on lavapipe "
          f"before moving back; medians of {runs}")
    print("| positions in use per row | moved MiB | CPU -> lavapipe ms | back into kept CPU buffers ms (MiB) "
          "| back into new CPU buffers ms (of which allocating them) | whole buffers ms (CPU -> lavapipe) |")
    print("|---|---|---|---|---|---|")

    def decode_there(cache: KVCache) -> None:  # what `steps` decode steps write (a full row: its last positions)
        live = [row for row, n in enumerate(cache.written) if n]
        first = [min(int(cache.written[row]), capacity - steps) for row in live]
        for i in range(steps):
            ends = [p + i + 1 for p in first]
            cache.use(live, ends, max(ends), [end - 1 for end in ends])
            for b in cache.buffers:
                view = b.to_host()
                for row, end in zip(live, ends):
                    view[row, :, end - 1] = 1.0

    for lengths in cases:
        times: dict[str, list[float]] = {k: [] for k in ("there", "kept", "new", "alloc", "whole")}
        for run in range(runs + 1):  # the first run warms up (the allocators' pages)
            cache = KVCache.zeros(cpu, layers, rows, heads, capacity, dim)
            cache.written[:] = lengths
            t = [time.perf_counter()]
            copies = [unset_array(gpu, b.shape, cache.dtype, mappable_memory(False)) for b in cache.buffers]
            for copy, b in zip(copies, cache.buffers):  # as a move was before it copied only the positions in use
                copy.to_host()[...] = b.to_host()
            del copies
            t.append(time.perf_counter())
            moved = cache.move_to(gpu, mappable_memory(False), keep=True)
            t.append(time.perf_counter())
            decode_there(cache)
            t.append(time.perf_counter())
            back = cache.move_to(cpu, mappable_memory(True))
            t.append(time.perf_counter())
            cache.move_to(gpu, mappable_memory(False))  # keeps nothing: the way back allocates
            decode_there(cache)
            t.append(time.perf_counter())
            cache.move_to(cpu, mappable_memory(True))
            t.append(time.perf_counter())
            del cache
            t.append(time.perf_counter())
            fresh = [unset_array(cpu, (rows, heads, capacity, dim), np.dtype(np.float32), mappable_memory(True))
                     for _ in range(2 * layers)]
            t.append(time.perf_counter())
            del fresh
            if run:  # t: whole copy | move there | steps | back, kept | there, steps | back, new | free | allocate
                for key, (a, b) in {"whole": (0, 1), "there": (1, 2), "kept": (3, 4), "new": (5, 6), "alloc": (7, 8)}.items():
                    times[key].append(t[b] - t[a])
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"| {', '.join(map(str, lengths))} | {moved / 2**20:.0f} | {med['there']:.1f} | {med['kept']:.1f} ({back / 2**20:.1f}) | "
              f"{med['new']:.1f} ({med['alloc']:.1f}) | {med['whole']:.1f} |")
    return 0


def estimates(bundle: Path, profile_path: Path, prompts: list[int]) -> dict:
    """Cost-model estimates of each plan's placements: {plan: {profile: {n: (prefill ms, decode ms)}}}."""
    from iree_glm.bundle.manifest import read_manifest
    from iree_glm.planner.profile import load_profile
    from iree_glm.planner.scheduler import PartitionPlan, estimate_placement

    m = read_manifest(bundle, verify=False)
    decode = [p.device for p in PartitionPlan.from_json((bundle / m.options.plan).read_text()).parts]
    profiles = {"declared": load_profile(str(profile_path)), "calibrated": load_profile("host-cpu-vulkan")}
    out = {}
    for plan in m.options.plans:
        own = [plan.decode_device] * len(decode) if plan.decode_device else decode
        prefill = [s.device for s in plan.prefill_stages for _ in s.parts] if plan.prefill_stages else own
        out[plan.name] = {
            name: {n: (estimate_placement(m.model, prof, prefill, capacity=m.options.kv_cache_slots, prefill_tokens=n)["prefill_ms"],
                       estimate_placement(m.model, prof, own, capacity=m.options.kv_cache_slots, context=n)["decode_ms"])
                   for n in prompts}
            for name, prof in profiles.items()}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=Path("/tmp/iree_glm-plans-bench"))
    p.add_argument("--checkpoint", type=Path, help="checkpoint to build from (default: the shipped default model)")
    p.add_argument("--prompts", default="32,96")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--switch-prompts", help="prompt lengths of the switch between decode devices (default: --prompts)")
    p.add_argument("--switch-only", action="store_true", help="measure only the switch between decode devices")
    p.add_argument("--kv-move", metavar="ROWS:CAPACITY", help="measure only the KV move at the GLM-edge-1.5B shape (no model)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    prompts = [int(x) for x in args.prompts.split(",")]
    switch_prompts = [int(x) for x in (args.switch_prompts or args.prompts).split(",")]
    if args.kv_move:
        rows, capacity = (int(x) for x in args.kv_move.split(":"))
        print(f"CPU: {bench.cpu_with_flags()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
        cases = [[n] + [0] * (rows - 1) for n in switch_prompts] + [[n] * rows for n in switch_prompts]
        return kv_move(rows, capacity, cases, args.runs, args.steps)
    if args.child == "--switch":
        print(json.dumps(switch_child(args.bundle, switch_prompts, args.runs, args.steps)))
        return 0
    if args.child:
        print(json.dumps(child(args.bundle, args.child, prompts, args.runs, args.steps)))
        return 0
    profile = args.bundle.with_name(args.bundle.name + ".profile.toml")
    if not (args.bundle / "manifest.json").exists():
        from iree_glm.compiler.build import BuildOptions, build_bundle

        write_profile(profile)
        context = max(prompts + switch_prompts) + 4 * args.steps + 16  # a switched conversation decodes four legs
        build_bundle(args.checkpoint, args.bundle, BuildOptions(max_context=context, profile=str(profile)))
    from iree_glm.bundle.manifest import read_manifest

    plans = [pl.name for pl in read_manifest(args.bundle, verify=False).options.plans]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    measured = {}
    switched = "--switch" if any(pl.decode_module for pl in read_manifest(args.bundle, verify=False).options.plans) else None
    if args.switch_only and not switched:
        print(f"{args.bundle}: carries no plan that decodes on another device: nothing to switch", file=sys.stderr)
        return 2
    for plan in ([] if args.switch_only else plans) + ([switched] if switched else []):
        r = subprocess.run([sys.executable, __file__, "--bundle", str(args.bundle), "--child=" + plan, "--prompts", args.prompts,
                            "--switch-prompts", ",".join(map(str, switch_prompts)), "--runs", str(args.runs),
                            "--steps", str(args.steps)], capture_output=True, text=True, env=env, check=True)
        measured[plan] = json.loads(r.stdout.strip().splitlines()[-1])
    if args.switch_only:
        print(f"CPU: {bench.cpu_with_flags()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start of the report")
        print(f"medians of {args.runs} runs, {args.steps} decode steps per leg; switches in a process of their own")
        return report_switch(measured[switched], 0.0, "one step (no hand-off measured: --switch-only)")
    est = estimates(args.bundle, profile, prompts)
    print(f"CPU: {bench.cpu_with_flags()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start of the report")
    print(f"bundle {args.bundle}; medians of {args.runs} runs, {args.steps} decode steps each; each plan in its own process")
    print("| plan | prompt | TTFT ms | hand-off ms (share of TTFT) | prefill on devices ms | est. prefill ms declared / calibrated "
          "| decode ms/token | est. decode declared / calibrated |")
    print("|---|---|---|---|---|---|---|---|")
    for plan in plans:
        for n in prompts:
            r = measured[plan]["prompts"][str(n)]
            (pd, dd), (pc, dc) = est[plan]["declared"][n], est[plan]["calibrated"][n]
            print(f"| {plan} | {n} | {r['ttft_ms']:.1f} | {r['handoff_ms']:.2f} ({100 * r['handoff_ms'] / r['ttft_ms']:.3g}%) | "
                  f"{r['prefill_device_ms']:.1f} | {pd:.1f} / {pc:.1f} | {r['decode_ms']:.2f} | {dd:.2f} / {dc:.2f} |")
    n = str(prompts[-1])
    plain = [m for name, m in measured.items() if name != switched]
    short = min(len(m["tokens"]) for m in plain)
    same = len({tuple(m["tokens"][:short]) for m in plain}) == 1
    print(f"greedy tokens of every plan equal (first {short}): {same}")
    split = measured.get("phase-split")
    handoff = split["prompts"][n]["handoff_ms"] if split is not None else 0.0
    if split is not None and "switch_us" in split:
        step = split["prompts"][n]["decode_ms"]
        print(f"plan switch, same decode module: {split['switch_us']:.2f} us against one decode step {step:.2f} ms + the "
              f"{n}-token hand-off {handoff:.2f} ms (ratio {split['switch_us'] / 1e3 / (step + handoff):.2e})")
    if switched:
        same = report_switch(measured[switched], handoff, f"one step + the {n}-token hand-off") == 0 and same
    return 0 if same else 1


def report_switch(sw: dict, handoff: float, what: str) -> int:
    """Print the switch between decode devices per conversation length; 1 if a switched
    generation's tokens differ from the unswitched ones."""
    same = True
    for n, r in sw["prompts"].items():
        same = same and r["tokens_equal"]
        print(f"switched generation after a {n}-token prompt: tokens equal to the unswitched ones: {r['tokens_equal']}; "
              f"whole cache {r['cache_bytes'] / 2**20:.2f} MiB")
        for leg, label in (("there", f"main -> {sw['plan']}"), ("back", f"{sw['plan']} -> main")):
            x, c = r[leg], r["ctl_" + leg]
            extra = x["first_step_ms"] - x["step_ms"]
            pause = c["first_step_ms"] - c["step_ms"]
            print(f"  {label}: KV move {x['move_ms']:.3f} ms ({x['bytes'] / 2**20:.3f} MiB; whole buffers {x['whole_ms']:.3f} ms), "
                  f"first step {x['first_step_ms']:.2f} ms against {x['step_ms']:.2f} ms per later step: the switch costs "
                  f"{extra:.2f} ms, against {what} {x['step_ms'] + handoff:.2f} ms "
                  f"(ratio {extra / (x['step_ms'] + handoff):.2f}; move alone {x['move_ms'] / (x['step_ms'] + handoff):.3f}); "
                  f"the same pause without a switch: first step {c['first_step_ms']:.2f} against {c['step_ms']:.2f} ms "
                  f"({pause:.2f} ms, ratio {pause / c['step_ms']:.2f})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
