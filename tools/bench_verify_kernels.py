"""Speculative verification's kernels against a decode step, on one thread: time of R rows of x
through the few-row matrix-vector kernel (each row bit for bit the decode kernel's), through
the prompt path (row quantization + matrix kernel, different rounding), and of one row through
the decode kernel, for the int8 and int4 kernels of the best kernel set this CPU runs, on the
330M config's layer shapes (summed over qkv, o, gate_up, down). Time is the thread's CPU time
(bench_kernels.py: a shared machine deschedules long calls, which wall time would count):

    python tools/bench_verify_kernels.py --rows 1,2,3,5,9,16 --runs 5
    python tools/bench_verify_kernels.py --baseline ../main/iree_glm/kernels   # another checkout's verify kernels, side by side

Kernel time only: what a verify call costs end to end is tools/bench_speculative.py's.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the CPU's name and flags)
from bench_kernels import MEMREF, SHAPES, Int4Case, Int8Case, _memref, baseline_library  # noqa: E402


class Rows:
    """The few-row kernel (`verify`) or, with `one`, the decode kernel once per row's worth of
    one row (rows = 1)."""

    def __init__(self, fmt: str, lib, m: int, k: int, n: int, rng, one: bool = False):
        self.fmt, self.lib, self.m, self.k, self.n, self.one = fmt, lib, 1 if one else m, k, n, one
        self.x = rng.standard_normal((self.m, k)).astype(np.float32)
        self.y = np.zeros((self.m, n), np.float32)
        if fmt == "int8":
            self.q = rng.integers(-127, 128, (n // 16, k, 16), dtype=np.int8)
            lib.iree_glm_int8_matvec_workgroup.argtypes = MEMREF * 3 + [ctypes.c_size_t] * 4
            lib.iree_glm_int8_matvec_rows_workgroup.argtypes = MEMREF * 3 + [ctypes.c_size_t] * 5
        else:
            self.q = rng.integers(-128, 128, (n, k // 32, 16), dtype=np.int8)
            self.s = np.full((n, k // 32), 0.01, np.float16).view(np.uint16)
            lib.iree_glm_int4_matvec_workgroup.argtypes = MEMREF * 4 + [ctypes.c_size_t] * 5
            lib.iree_glm_int4_matvec_rows_workgroup.argtypes = MEMREF * 4 + [ctypes.c_size_t] * 6

    def __call__(self) -> None:
        lib, m, k, n = self.lib, self.m, self.k, self.n
        if self.fmt == "int8":
            t = n // 16
            if self.one:
                lib.iree_glm_int8_matvec_workgroup(*_memref(self.x), *_memref(self.q), *_memref(self.y), t, k, 0, t)
            else:
                lib.iree_glm_int8_matvec_rows_workgroup(*_memref(self.x), *_memref(self.q), *_memref(self.y), m, t, k, 0, t)
        elif self.one:
            lib.iree_glm_int4_matvec_workgroup(*_memref(self.x), *_memref(self.q), *_memref(self.s), *_memref(self.y), n, k, 32, 0, n)
        else:
            lib.iree_glm_int4_matvec_rows_workgroup(*_memref(self.x), *_memref(self.q), *_memref(self.s), *_memref(self.y), m, n, k,
                                                    32, 0, n)


def main() -> int:
    from iree_glm.kernels import toolchain

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1,2,3,5,9,16")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--formats", default="int8,int4")
    p.add_argument("--set", help="kernel set (default: the best this CPU runs)")
    p.add_argument("--baseline", type=Path, help="a kernels folder (iree_glm/kernels of another checkout) whose verify kernels run alongside")
    args = p.parse_args()
    usable = [s for s in toolchain.KERNEL_SETS if s.verify_rows and toolchain.unavailable_reason(s) is None]
    kernel_set = next((s for s in usable if args.set in (None, s.name)), None)
    if kernel_set is None:
        print(f"no kernel set with verify kernels{f' named {args.set}' if args.set else ''} runs on this CPU "
              f"(usable: {', '.join(s.name for s in usable) or 'none'})")
        return 2
    print(f"# {bench.cpu_with_flags()}, kernel set {kernel_set.name}, one thread, CPU time, medians of {args.runs}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            lib = ctypes.CDLL(str(toolchain.build_object(Path(tmp), kernel_set.source(fmt), kernel_set, shared=True)))
            base = None
            if args.baseline:
                base = baseline_library(args.baseline, kernel_set, fmt, Path(tmp))
            print(f"\n{fmt}: ms per call over the 330M layer shapes (x decode step)\n")
            print("| rows | decode kernel x 1 | verify kernel | prompt path |" + (" baseline verify kernel | verify / baseline |" if base else ""))
            print("|---|---|---|---|" + ("---|---|" if base else ""))
            one = None
            for m in [int(r) for r in args.rows.split(",")]:
                kinds = {"one": [Rows(fmt, lib, m, k, n, rng, one=True) for k, n in SHAPES.values()],
                         "rows": [Rows(fmt, lib, m, k, n, rng) for k, n in SHAPES.values()],
                         "prompt": [(Int8Case if fmt == "int8" else Int4Case)(lib, m, k, n, rng, kernel_set) for k, n in SHAPES.values()]}
                if base:
                    kinds["baseline"] = [Rows(fmt, base, m, k, n, rng) for k, n in SHAPES.values()]
                times: dict[str, list[float]] = {name: [] for name in kinds}
                for _ in range(args.runs):
                    for name, cases in kinds.items():  # alternated within a run
                        t = time.thread_time()
                        for case in cases:
                            case()
                        times[name].append(time.thread_time() - t)
                med = {name: statistics.median(v) * 1e3 for name, v in times.items()}
                one = one or med["one"]
                extra = f" {med['baseline']:.2f} ({med['baseline'] / one:.2f}x) | {med['rows'] / med['baseline']:.2f} |" if base else ""
                print(f"| {m} | {med['one']:.2f} | {med['rows']:.2f} ({med['rows'] / one:.2f}x) | {med['prompt']:.2f} ({med['prompt'] / one:.2f}x) |{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
