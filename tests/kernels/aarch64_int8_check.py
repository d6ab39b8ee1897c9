"""Run under an arm64 Python (test_aarch64_kernels.py): the aarch64 int8 matrix-vector kernel
against its integer reference on odd shapes and extremes. Prints one line per case; exits 1 on
the first mismatch.

Usage: python aarch64_int8_check.py LIBRARY.so
"""

import ctypes
import sys

import numpy as np

MEMREF = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]


def memref(a: np.ndarray) -> list:
    return [a.ctypes.data, a.ctypes.data, 0, a.size, 1]


def quantize_x(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [K] f32 -> (int8 per block of 32 as int64, block scales): f32 arithmetic as the kernel's."""
    blocks = x.reshape(-1, 32)
    d = (np.abs(blocks).max(axis=1) / np.float32(127.0)).astype(np.float32)
    inv = np.where(d > 0, np.float32(1.0) / np.where(d > 0, d, 1), 0).astype(np.float32)
    q = np.clip(np.rint(blocks * inv[:, None]), -127, 127).astype(np.int64)
    return q, d


def reference(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(exact integer block sums [N, K/32], y in float64) for w [N, K] int8."""
    q, d = quantize_x(x)
    sums = np.einsum("nck,ck->nc", w.reshape(w.shape[0], -1, 32).astype(np.int64), q)
    return sums, sums.astype(np.float64) @ d.astype(np.float64)


def pack(w: np.ndarray) -> np.ndarray:
    """[N, K] -> [N/16, K, 16] (transforms/quantize.py's int8 layout)."""
    n, k = w.shape
    return np.ascontiguousarray(w.reshape(n // 16, 16, k).transpose(0, 2, 1))


def main(library: str) -> int:
    lib = ctypes.CDLL(library)
    fn = lib.iree_glm_int8_matvec_workgroup
    fn.argtypes = MEMREF * 3 + [ctypes.c_size_t] * 4
    rng = np.random.default_rng(0)
    cases = [(16, 32, "random"), (48, 96, "random"), (112, 480, "random"), (16, 16384, "extremes"),
             (32, 64, "zeros"), (80, 160, "tiny"), (16, 4096, "extremes"), (32, 1024, "integers")]
    for n, k, kind in cases:
        if kind == "extremes":  # every product at +-127 * 127, the sums at their largest
            w = np.where(rng.random((n, k)) < 0.5, -127, 127).astype(np.int8)
            x = np.where(rng.random(k) < 0.5, -1.0, 1.0).astype(np.float32) * np.float32(3.5)
        elif kind == "integers":  # d = 1 in every block: y is the integer sum itself (< 2^24: exact in f32)
            w = rng.integers(-127, 128, (n, k), dtype=np.int8)
            x = rng.integers(-127, 128, k).astype(np.float32)
            x[::32] = 127
        elif kind == "zeros":
            w = rng.integers(-127, 128, (n, k), dtype=np.int8)
            x = np.zeros(k, np.float32)
        elif kind == "tiny":
            w = rng.integers(-127, 128, (n, k), dtype=np.int8)
            x = (rng.standard_normal(k) * 1e-30).astype(np.float32)
        else:
            w = rng.integers(-127, 128, (n, k), dtype=np.int8)
            x = (rng.standard_normal(k) * rng.choice([1e-3, 1.0, 1e3], k)).astype(np.float32)
        y = np.full(n, np.nan, np.float32)
        # Two workgroups over the tiles, as a dispatch splits them; the second asks past the end.
        tiles, packed = n // 16, pack(w)  # kept alive: the kernel gets only its address
        for begin, end in ((0, tiles // 2), (tiles // 2, tiles + 3)):
            fn(*memref(x), *memref(packed), *memref(y), tiles, k, begin, end)
        sums, want = reference(x, w)
        # Per block the kernel adds d * (exact integer sum) in f32 (one rounding per block): the
        # error is bounded by the f32 rounding of the running sum of |d * sum|.
        bound = 4 * np.finfo(np.float32).eps * (np.abs(sums) @ quantize_x(x)[1].astype(np.float64)) * (k // 32) + 1e-45
        err = np.abs(y.astype(np.float64) - want)
        if kind == "integers":
            bound = np.zeros(n)
        ok = bool(np.all(np.isfinite(y)) and np.all(err <= bound))
        print(f"N={n} K={k} {kind}: max error {err.max():.3g} (bound {bound.max():.3g}) {'ok' if ok else 'MISMATCH'}")
        if not ok:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
