"""Prefill with a persisted prefix (`--prefix-cache-dir`) against cold prefill, in new processes.

A prompt of --prefix shared tokens + --tail new ones. Setup: one process prefills a prompt
with the same prefix (another tail) into a fresh cache folder. Then, alternating, each in its
own process: `cold` (no prefix cache), `warm` (the folder; the first request restores the
prefix by host copies into the mapped KV buffers, as on CPU devices) and `warm-store-kv` (the
same through the bundle's `store_kv` call, as on devices whose memory the host cannot map).
A mode with `-nowake` skips the session's load-time call that wakes IREE's task workers
(`Session._wake_workers`), so that the first prefill pays for it as before. Each child reports the session load time and the first prefill's time, split into
the restore (match, the KV copy, `store_kv`) and the rest; medians over --reps.

    python tools/bench_prefix_restore.py BUNDLE                 # 1024 + 16 tokens
    python tools/bench_prefix_restore.py BUNDLE --prefix 2048 --reps 7
    python tools/bench_prefix_restore.py BUNDLE --modes cold,warm     # only these
    python tools/bench_prefix_restore.py BUNDLE --trees main=/work/main,branch=.   # two source trees, alternated
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


KEYS = ("load_ms", "prefill_ms", "store_kv_ms", "run_prefill_ms", "insert_ms", "other_ms")


def _prompt(n: int, vocab: int, salt: int) -> list[int]:
    return [(i * 7919 + salt) % (vocab - 1) + 1 for i in range(n)]


MODES = ("cold", "warm", "warm-store-kv", "cold-nowake", "warm-nowake")


def child(bundle: Path, folder: Path | None, prefix: int, tail: int, salt: int, store_kv: bool, wake: bool) -> dict:
    from iree_glm.bundle.kv_layout import STORE_KV
    from iree_glm.runtime import Session

    if not wake:
        Session._wake_workers = lambda self: None
    t = time.perf_counter()
    s = Session.load(bundle, prefix_cache_dir=folder)
    load = time.perf_counter() - t
    vocab = s.config.vocab_size
    ids = _prompt(prefix, vocab, 0) + _prompt(tail, vocab, salt)
    state, cache = s.new_request(ids, max_new_tokens=1), s.new_cache()
    if store_kv:
        cache._views = []  # as if the host could not map the buffers: the restore calls store_kv
    spent = {"store_kv": 0.0, "run_prefill": 0.0, "insert": 0.0}

    def timed(name, fn):
        def call(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t0
        return call

    s._fns[STORE_KV] = timed("store_kv", s._fns[STORE_KV])
    s.run_prefill = timed("run_prefill", s.run_prefill)
    if s.prefix_cache is not None:
        s.prefix_cache.insert = timed("insert", s.prefix_cache.insert)
    t = time.perf_counter()
    s.prefill(state, cache)
    total = time.perf_counter() - t
    return {"load_ms": load * 1e3, "prefill_ms": total * 1e3, "cached_tokens": state.cached_tokens,
            **{f"{k}_ms": v * 1e3 for k, v in spent.items()}, "other_ms": (total - sum(spent.values())) * 1e3}


def _run(args, mode: str, folder: Path | None, salt: int, src: str) -> dict:
    cmd = [sys.executable, __file__, str(args.bundle), "--child", "--prefix", str(args.prefix), "--tail", str(args.tail),
           "--salt", str(salt), "--src", src]
    if mode == "warm-store-kv":
        cmd.append("--store-kv")
    if mode.endswith("-nowake"):
        cmd.append("--no-wake")
    if folder is not None:
        cmd += ["--folder", str(folder)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--prefix", type=int, default=1024)
    p.add_argument("--tail", type=int, default=16)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    p.add_argument("--trees", default=f"this={REPO}", help="NAME=PATH,... source trees to import iree_glm from, alternated")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--salt", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--store-kv", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-wake", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        sys.path.insert(0, str(Path(args.src).resolve()))  # ahead of this tool's own tree
        print(json.dumps(child(args.bundle, args.folder, args.prefix, args.tail, args.salt, args.store_kv, not args.no_wake)))
        return
    modes = tuple(args.modes.split(","))
    if not set(modes) <= set(MODES) or "cold" not in modes:
        p.error(f"--modes: from {', '.join(MODES)}, with cold (got {args.modes})")
    trees = dict(t.split("=", 1) for t in args.trees.split(","))
    runs = [(tree, m) for m in modes for tree in trees]
    label = {(tree, m): m if len(trees) == 1 else f"{tree}: {m}" for tree, m in runs}
    rows: dict[tuple[str, str], list[dict]] = {r: [] for r in runs}
    from iree_glm.tuning.calibrate import machine_summary

    load = machine_summary()
    with tempfile.TemporaryDirectory() as work:
        for rep in range(args.reps):
            folder = Path(work) / f"cache{rep}"  # fresh: each warm run restores the same blocks
            _run(args, "persist", folder, salt=9, src=next(iter(trees.values())))
            warm = [(tree, m) for tree, m in runs if m.startswith("warm")]
            for tree, mode in warm:  # a copy each: every warm run finds the same blocks and stores its new one
                shutil.copytree(folder, Path(work) / f"{tree}-{mode}{rep}")
            k = rep % len(runs)
            for tree, mode in runs[k:] + runs[:k]:  # each run goes first in turn
                where = Path(work) / f"{tree}-{mode}{rep}" if (tree, mode) in warm else None
                rows[(tree, mode)].append(_run(args, mode, where, salt=1 + rep, src=trees[tree]))
            shutil.rmtree(folder)
    med = {r: {k: statistics.median(x[k] for x in rs) for k in KEYS} for r, rs in rows.items()}
    cached = next(rows[r][0]["cached_tokens"] for r in runs if r[1].startswith("warm"))
    print(f"{args.bundle}: prompt {args.prefix} + {args.tail} tokens, warm restores {cached}; medians of {args.reps}\n")
    print("| run | session load ms | first prefill ms | of which store_kv | prefill of the rest | storing new blocks | the rest (block lookup and copies, reading the KV back) |\n|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {label[r]} | " + " | ".join(f"{med[r][k]:.1f}" for k in KEYS) + " |")
    for tree, m in runs:
        if m.startswith("warm"):
            base = "cold-nowake" if m.endswith("-nowake") and "cold-nowake" in modes else "cold"
            print(f"\nprefill {label[(tree, base)]} / {label[(tree, m)]}: "
                  f"{med[(tree, base)]['prefill_ms'] / med[(tree, m)]['prefill_ms']:.1f}x", end="")
    print(f"\nbefore: {load}\nafter: {machine_summary()}")


if __name__ == "__main__":
    main()
