"""The flash-attention kernel's forms side by side, called directly (no IREE): each kernel set's
attention.c built as a shared library, its workgroups run over every (head, 32-row tile) in
one thread, the forms alternated call by call in one process, thread CPU time (the machine's
load then shifts both alike), best of `--runs` each. Prints a Markdown table and the CPU.

    python tools/bench_attention_sets.py                       # avx2 vs avx512 on this CPU
    python tools/bench_attention_sets.py --sets avx2,avx512 --runs 20
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from iree_glm.kernels import toolchain  # noqa: E402

ROWS = 32  # query rows per workgroup (passes/attention_kernel.py)
MEMREF = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]
# (what, positions s over n = start + s keys, query heads per KV head, local, global); 2 KV heads, head dim 64
CASES = [
    ("prompt chunk, causal", 1792, 256, 4, 0, 0),
    ("prompt chunk, sparse 256 + 16", 3584, 512, 2, 256, 16),
    ("whole prompt, causal", 0, 2048, 2, 0, 0),
    ("decode step, causal", 4095, 1, 2, 0, 0),
    ("decode step, sparse 256 + 16", 4095, 1, 2, 256, 16),
]


def _memref(a: np.ndarray) -> list:
    return [a.ctypes.data, a.ctypes.data, 0, a.size, 1]


def load(kernel_set: toolchain.KernelSet, folder: Path):
    lib = ctypes.CDLL(str(toolchain.build_object(folder, kernel_set.source("attention"), kernel_set, shared=True)))
    fn = lib.iree_glm_attention_workgroup
    fn.argtypes = MEMREF * 5 + [ctypes.c_size_t] * 4 + [ctypes.c_float] + [ctypes.c_size_t] * 6
    return fn


def run_case(fns: dict, start: int, s: int, group: int, local: int, global_: int, runs: int) -> dict[str, float]:
    """Best thread-CPU milliseconds of each form over all workgroups of one attention."""
    heads, d, n = 2, 64, start + s
    g = np.random.default_rng(0)
    q = g.standard_normal((heads, s * group, d), np.float32)
    k = g.standard_normal((heads, n, d), np.float32)
    v = g.standard_normal((heads, n, d), np.float32)
    p, j = np.arange(start, n)[:, None], np.arange(n)[None]
    seen = (j <= p) & ((j < global_) | (j > p - local)) if local else j <= p
    mask = np.where(seen, 0.0, -np.inf).astype(np.float32)
    out = np.empty((heads, s * group, d), np.float32)
    args = [*_memref(q), *_memref(k), *_memref(v), *_memref(mask), *_memref(out)]
    best = {name: float("inf") for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t = time.thread_time()
            for h in range(heads):
                for r0 in range(0, s * group, ROWS):
                    fn(*args, s * group, n, d, d, d**-0.5, 0, group, h, r0, local, global_)
            best[name] = min(best[name], (time.thread_time() - t) * 1e3)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="avx2,avx512", help="kernel sets' short names, the first the baseline")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    from iree_glm.tuning.calibrate import machine_summary

    names = {s.short: s for s in toolchain.KERNEL_SETS}
    sets = [names[x] for x in args.sets.split(",")]
    for s in sets:
        reason = toolchain.unavailable_reason(s)
        if reason:
            sys.exit(f"bench_attention_sets: the {s.short} form cannot run here: {reason}")
    print(f"machine: {machine_summary()}\n")
    with tempfile.TemporaryDirectory() as tmp:
        fns = {s.short: load(s, Path(tmp)) for s in sets}
        print("| case | " + " | ".join(f"{s.short} ms" for s in sets) + " | " + " | ".join(f"{s.short} speed-up" for s in sets[1:]) + " |")
        print("|---|" + "---|" * (2 * len(sets) - 1))
        for what, start, s, group, local, global_ in CASES:
            best = run_case(fns, start, s, group, local, global_, args.runs)
            base = best[sets[0].short]
            print(f"| {what} ({s} x {group} rows over {start + s} keys) | " + " | ".join(f"{best[x.short]:.3f}" for x in sets) + " | "
                  + " | ".join(f"{base / best[x.short]:.2f}x" for x in sets[1:]) + " |")


if __name__ == "__main__":
    main()
