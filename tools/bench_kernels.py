"""Our prompt (matrix) kernels of every kernel set this CPU runs, side by side on one thread.

Each set's int8 / int4 C file is built as a shared library with the flags bundles use and its
row quantization + matrix kernel are called through ctypes on the 330M config's layer shapes,
the sets alternating, the median of the runs printed as GOP/s (2 M N K / time). Time is the
calling thread's CPU time (`time.thread_time`), not wall time: on a shared machine the kernel
is descheduled for long stretches, which CPU time does not count (`--clock wall` for wall time):

    python tools/bench_kernels.py --m 128,512 --runs 5
    python tools/bench_kernels.py --formats int4 --baseline ../main/iree_glm/kernels   # another checkout's kernels beside

On AMX, int4 has a second column, amx-bf16: the same object's bf16 prompt path (weights widened
to bf16 tiles, tdpbf16ps) beside its tdpbssd kernel.

Kernel time only (one workgroup covering the whole matmul, one thread): whole-model numbers
come from tools/bench.py.
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

SHAPES = {"qkv": (1024, 1280), "o": (1024, 1024), "gate_up": (1024, 5632), "down": (2816, 1024)}  # (K, N) of the 330M config
MEMREF = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]


def _memref(a: np.ndarray) -> list:
    return [a.ctypes.data, a.ctypes.data, 0, a.size, 1]


def _aligned(nbytes: int) -> np.ndarray:
    raw = np.zeros(nbytes + 64, np.int8)
    off = (-raw.ctypes.data) % 64
    return raw[off: off + nbytes]


class Int8Case:
    def __init__(self, lib, m: int, k: int, n: int, rng, kernel_set):
        from iree_glm.kernels import int8

        self.lib, self.m, self.k, self.tiles = lib, m, k, n // 16
        self.rows = kernel_set.rows_per_call("int8")  # rows a call takes, as the dispatch's grid gives them
        lib.iree_glm_int8_quantize_workgroup.argtypes = MEMREF * 2 + [ctypes.c_size_t] * 4
        lib.iree_glm_int8_matmul_workgroup.argtypes = MEMREF * 3 + [ctypes.c_size_t] * 7
        self.x = rng.standard_normal((m, k)).astype(np.float32)
        self.q = rng.integers(-127, 128, (self.tiles, k, 16), dtype=np.int8)
        self.xq = _aligned(m * int8.xq_row_bytes(k))
        self.y = np.zeros((m, n), np.float32)

    def __call__(self) -> None:
        lib, m, k = self.lib, self.m, self.k
        lib.iree_glm_int8_quantize_workgroup(*_memref(self.x), *_memref(self.xq), m, k, 0, m)
        for m0 in range(0, m, self.rows):
            lib.iree_glm_int8_matmul_workgroup(*_memref(self.xq), *_memref(self.q), *_memref(self.y), m, self.tiles, k, 0,
                                               self.tiles, m0, m0 + self.rows)


class Int4Case:
    def __init__(self, lib, m: int, k: int, n: int, rng, kernel_set, group: int = 32):
        from iree_glm.kernels import int4

        self.lib, self.m, self.k, self.n, self.group = lib, m, k, n, group
        self.rows = kernel_set.rows_per_call("int4")
        lib.iree_glm_int4_quantize_workgroup.argtypes = MEMREF * 2 + [ctypes.c_size_t] * 5
        lib.iree_glm_int4_matmul_workgroup.argtypes = MEMREF * 4 + [ctypes.c_size_t] * 8
        self.x = rng.standard_normal((m, k)).astype(np.float32)
        self.q = rng.integers(-128, 128, (n, k // group, group // 2), dtype=np.int8)
        self.s = np.full((n, k // group), 0.01, np.float16).view(np.uint16)
        self.xq = _aligned(m * int4.xq_row_bytes(k))
        self.y = np.zeros((m, n), np.float32)

    def __call__(self) -> None:
        lib, m, k, n, g = self.lib, self.m, self.k, self.n, self.group
        lib.iree_glm_int4_quantize_workgroup(*_memref(self.x), *_memref(self.xq), m, k, g, 0, m)
        for m0 in range(0, m, self.rows):
            lib.iree_glm_int4_matmul_workgroup(*_memref(self.xq), *_memref(self.q), *_memref(self.s), *_memref(self.y), m, n, k,
                                               g, 0, n, m0, m0 + self.rows)


class Int4Bf16Case(Int4Case):
    """The AMX set's bf16 int4 path: x's rows to bf16, weights widened to bf16 tiles (tdpbf16ps)."""

    def __init__(self, lib, m: int, k: int, n: int, rng, kernel_set, group: int = 32):
        from iree_glm.kernels import bf16, int4

        super().__init__(lib, m, k, n, rng, kernel_set, group)
        getattr(lib, int4.BF16_CONVERT_SYMBOL).argtypes = MEMREF * 2 + [ctypes.c_size_t] * 4
        getattr(lib, int4.BF16_MATMUL_SYMBOL).argtypes = MEMREF * 4 + [ctypes.c_size_t] * 8
        self.xq = _aligned(m * bf16.xb_row_bytes(k))

    def __call__(self) -> None:
        lib, m, k, n, g = self.lib, self.m, self.k, self.n, self.group
        lib.iree_glm_int4_convert_bf16_workgroup(*_memref(self.x), *_memref(self.xq), m, k, 0, m)
        for m0 in range(0, m, self.rows):
            lib.iree_glm_int4_bf16_matmul_workgroup(*_memref(self.xq), *_memref(self.q), *_memref(self.s), *_memref(self.y), m,
                                                    n, k, g, 0, n, m0, m0 + self.rows)


def baseline_library(kernels: Path, kernel_set, kernel: str, folder: Path) -> ctypes.CDLL:
    """`kernel_set`'s `kernel` built from another checkout's kernels folder (its iree_glm/kernels),
    as a shared library in `folder`/baseline: the before of a side-by-side comparison."""
    from iree_glm.kernels import toolchain

    source = kernels / kernel_set.source(kernel).relative_to(Path(toolchain.__file__).parent)
    (folder / "baseline").mkdir(exist_ok=True)
    return ctypes.CDLL(str(toolchain.build_object(folder / "baseline", source, kernel_set, shared=True)))


def main() -> int:
    from iree_glm.bundle.cpu_features import missing_features
    from iree_glm.kernels import bf16, toolchain

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", default="128,512", help="rows of x (comma-separated)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--formats", default="int8,int4")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--baseline", type=Path, help="a kernels folder (iree_glm/kernels of another checkout) whose sets run alongside")
    args = p.parse_args()
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    sets = [s for s in toolchain.KERNEL_SETS if toolchain.unavailable_reason(s) is None]
    folder = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    # int4 on AMX: both prompt paths of its object, the tdpbssd kernel and the bf16-widening one
    bf16_int4 = toolchain.X86_64_AMX in sets and not missing_features(bf16.FEATURES)
    print(f"load {open('/proc/loadavg').read().split()[:3]}; sets: {', '.join(s.name for s in sets)}; {args.clock} time")
    for fmt in args.formats.split(","):
        libs = {s.short: (ctypes.CDLL(str(toolchain.build_object(folder, s.source(fmt), s, shared=True))), s) for s in sets}
        if args.baseline:
            libs.update({f"{s.short} baseline": (baseline_library(args.baseline, s, fmt, folder), s) for s in sets})
        if fmt == "int4" and bf16_int4:
            libs["amx-bf16"] = libs["amx"]
        print("| format | M | shape K x N | " + " | ".join(f"{c} GOP/s" for c in libs) + " |")
        print("|---|---|---|" + "---|" * len(libs))
        for m in (int(v) for v in args.m.split(",")):
            for name, (k, n) in SHAPES.items():
                cases = {short: Int8Case(lib, m, k, n, rng, s) if fmt == "int8" else
                         (Int4Bf16Case if short == "amx-bf16" else Int4Case)(lib, m, k, n, rng, s)
                         for short, (lib, s) in libs.items()}
                times: dict[str, list[float]] = {short: [] for short in cases}
                for case in cases.values():
                    case()  # warm-up
                for _ in range(args.runs):
                    for short, case in cases.items():
                        t = clock()
                        case()
                        times[short].append(clock() - t)
                rates = [2 * m * n * k / statistics.median(t) / 1e9 for t in times.values()]
                print(f"| {fmt} | {m} | {name} {k} x {n} | " + " | ".join(f"{r:.0f}" for r in rates) + " |")
    print(f"load {open('/proc/loadavg').read().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
