"""Short prompts against a decode step: wall and CPU time of one call, after a cached context.

A prompt's uncached rest (a chat turn, the tokens after a restored prefix) is one or a few
prefill calls. Each child process loads BUNDLE, writes --context positions into a KV row
(host copies, as a prefix-cache restore does) and then times, in shuffled order, --reps times
each: a decode step at the next position and the rest of a prompt of n = --sizes new tokens at
the same place (`Session.run_prefill`: the bundle's chunks, each one prefill call). Per call:
wall ms, the process's CPU ms (all threads, IREE's task workers included) and context switches. On a loaded machine wall time is mostly waiting
for a core (involuntary switches: preempted; voluntary: a thread waiting for another), so CPU
time is the steadier measure of the work a call does.

--trees runs the same children from other source trees (e.g. main's checkout), one child per
(tree, driver) per round, rounds alternating which goes first, so before and after come from
one run; --drivers adds e.g. `local-sync` (one thread: no hand-offs between threads).

    python tools/bench_prefill_sizes.py BUNDLE --reps 15
    python tools/bench_prefill_sizes.py BUNDLE --trees main=/work/main,branch=. --drivers local-task,local-sync --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child(bundle: Path, driver: str, context: int, sizes: list[int], reps: int) -> dict:
    import random
    import resource
    import time

    import numpy as np

    from iree_glm.runtime import Session

    s = Session.load(bundle, verify=False, driver=driver)
    cfg = s.config
    cache = s.new_cache(1)
    rng = np.random.default_rng(0)
    kv = (rng.standard_normal((2, cfg.num_layers, cfg.num_kv_heads, context, cfg.head_dim)) * 0.1).astype(s.cache_dtype)
    s._store_kv(cache, 0, [kv])
    ids = [int(t) for t in rng.integers(1, cfg.vocab_size, max(sizes))]
    calls = {"decode": lambda: s.decode(ids[:1], [context], cache)}
    calls.update({str(n): (lambda n: lambda: s.run_prefill(ids[:n], context, cache, 0))(n) for n in sizes})
    for call in calls.values():
        call()  # each entry point's first call (transient pools, code pages) is not a short prompt's cost
    got: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": [], "vcs": [], "ics": []} for k in calls}
    order = list(calls)
    shuffle = random.Random(0).shuffle
    for _ in range(reps):
        shuffle(order)
        for k in order:
            r0, c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
            calls[k]()
            t1, c1, r1 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
            for key, value in (("wall", (t1 - t0) * 1e3), ("cpu", (c1 - c0) * 1e3),
                               ("vcs", r1.ru_nvcsw - r0.ru_nvcsw), ("ics", r1.ru_nivcsw - r0.ru_nivcsw)):
                got[k][key].append(value)
    return {k: {m: statistics.median(v) for m, v in row.items()} for k, row in got.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--context", type=int, default=1024, help="positions already in the row (default 1024)")
    p.add_argument("--sizes", default="1,4,16,64,256", help="prompt rests to time, in tokens")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--rounds", type=int, default=1, help="children per (tree, driver), alternated")
    p.add_argument("--drivers", default="local-task")
    p.add_argument("--trees", default=f"this={REPO}", help="NAME=PATH,... source trees to import iree_glm from")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    if args.child:
        print(json.dumps(child(args.bundle, args.child, args.context, sizes, args.reps)))
        return
    trees = dict(t.split("=", 1) for t in args.trees.split(","))
    runs = [(tree, driver) for tree in trees for driver in args.drivers.split(",")]
    from iree_glm.tuning.calibrate import machine_summary

    before = machine_summary()
    results: dict[tuple[str, str], list[dict]] = {r: [] for r in runs}
    for i in range(args.rounds):
        for tree, driver in runs[i % len(runs):] + runs[: i % len(runs)]:
            env = dict(os.environ, PYTHONPATH=str(Path(trees[tree]).resolve()))
            cmd = [sys.executable, __file__, str(args.bundle), "--child", driver, "--context", str(args.context),
                   "--sizes", args.sizes, "--reps", str(args.reps)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            results[(tree, driver)].append(json.loads(out.strip().splitlines()[-1]))
    keys = ["decode"] + [str(n) for n in sizes]
    print(f"{args.bundle}: after {args.context} cached positions; medians of {args.reps} calls per child, "
          f"{args.rounds} child(ren) each (median of their medians)\n")
    print("| tree | driver | call | wall ms | CPU ms | wall / decode | CPU / decode | voluntary / involuntary switches |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        med = {k: {m: statistics.median(r[k][m] for r in results[run]) for m in ("wall", "cpu", "vcs", "ics")} for k in keys}
        for k in keys:
            name = "decode step" if k == "decode" else f"{k} new token{'s' if k != '1' else ''}"
            row = med[k]
            print(f"| {run[0]} | {run[1]} | {name} | {row['wall']:.2f} | {row['cpu']:.2f} | {row['wall'] / med['decode']['wall']:.2f} "
                  f"| {row['cpu'] / med['decode']['cpu']:.2f} | {row['vcs']:g} / {row['ics']:g} |")
    print(f"\nbefore: {before}\nafter: {machine_summary()}")


if __name__ == "__main__":
    main()
