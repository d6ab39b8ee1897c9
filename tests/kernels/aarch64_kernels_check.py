"""Run under an arm64 Python (test_aarch64_kernels.py): the aarch64 kernels of one shared
object against numpy references, on odd shapes and extremes. Prints one line per case
("SUITE ...: ... ok" or "... MISMATCH") and goes on after a mismatch, so one qemu process
checks a whole kernel set.

Usage: python aarch64_kernels_check.py LIBRARY.so SUITE...   (suites: see SUITES)
"""

import ctypes
import sys

import numpy as np

MEMREF = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]
SIZE = ctypes.c_size_t
F32 = np.float32
EPS = float(np.finfo(F32).eps)


def memref(a: np.ndarray) -> list:
    return [a.ctypes.data, a.ctypes.data, 0, a.size, 1]


def report(suite: str, case: str, ok: bool, detail: str = "") -> bool:
    print(f"{suite} {case}: {detail} {'ok' if ok else 'MISMATCH'}", flush=True)
    return ok


def quantize_blocks(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[B, 32] f32 -> (int8 values as int64, block scales f32): d = max|x| / 127, x * (1 / d)
    rounded half to even, in f32 as the kernels compute it."""
    d = (np.abs(blocks).max(axis=1) / F32(127.0)).astype(F32)
    inv = np.where(d > 0, F32(1.0) / np.where(d > 0, d, F32(1)), F32(0)).astype(F32)
    return np.clip(np.rint(blocks * inv[:, None]), -127, 127).astype(np.int64), d


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[M, K] f32 -> (int8 per row, row scales): quant.quantize_rows in f32."""
    amax = np.abs(x).max(axis=1).astype(F32)
    inv = (F32(127.0) / np.maximum(amax, F32(1e-30))).astype(F32)
    return np.clip(np.rint(x * inv[:, None]), -127, 127).astype(np.int8), (amax / F32(127.0)).astype(F32)


def activations(rng, shape, kind: str) -> np.ndarray:
    if kind == "zeros":
        return np.zeros(shape, F32)
    if kind == "tiny":
        return (rng.standard_normal(shape) * 1e-30).astype(F32)
    if kind == "extremes":
        return (np.where(rng.random(shape) < 0.5, -1.0, 1.0) * 3.5).astype(F32)
    if kind == "equal":
        return np.full(shape, 0.75, F32)
    return (rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 1e3], shape)).astype(F32)


def int8_weights(rng, n: int, k: int, kind: str) -> np.ndarray:
    if kind == "extremes":
        return np.where(rng.random((n, k)) < 0.5, -127, 127).astype(np.int8)
    if kind == "equal":
        return np.full((n, k), -127, np.int8)
    return rng.integers(-127, 128, (n, k), dtype=np.int8)


def pack_int8(w: np.ndarray) -> np.ndarray:
    """[N, K] -> [N/16, K, 16] (transforms/quantize.py's int8 layout)."""
    n, k = w.shape
    return np.ascontiguousarray(w.reshape(n // 16, 16, k).transpose(0, 2, 1))


def block_bound(sums: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """f32 accumulation of per-block terms |sum * scale| (one rounding each, then a running sum):
    bounded by a few eps of the sum of their magnitudes times the number of blocks."""
    return 4 * EPS * (np.abs(sums) * np.abs(scales)).sum(axis=-1) * sums.shape[-1] + 1e-45


# --- int8 -----------------------------------------------------------------------------------


def check_int8_matvec(lib) -> bool:
    fn = lib.iree_glm_int8_matvec_workgroup
    fn.argtypes = MEMREF * 3 + [SIZE] * 4
    rng, ok = np.random.default_rng(0), True
    cases = [(16, 32, "random"), (48, 96, "random"), (112, 480, "random"), (16, 16384, "extremes"),
             (32, 64, "zeros"), (80, 160, "tiny"), (16, 4096, "extremes"), (32, 1024, "integers"), (48, 256, "equal")]
    for n, k, kind in cases:
        w = int8_weights(rng, n, k, kind)
        x = activations(rng, k, "random" if kind == "integers" else kind)
        if kind == "integers":  # d = 1 in every block: y is the integer sum itself (< 2^24: exact in f32)
            x = rng.integers(-127, 128, k).astype(F32)
            x[::32] = 127
        y = np.full(n, np.nan, F32)
        tiles, packed = n // 16, pack_int8(w)  # kept alive: the kernel gets only its address
        for begin, end in ((0, tiles // 2), (tiles // 2, tiles + 3)):  # as a dispatch splits tiles; past the end
            fn(*memref(x), *memref(packed), *memref(y), tiles, k, begin, end)
        q, d = quantize_blocks(x.reshape(-1, 32))
        sums = np.einsum("nck,ck->nc", w.reshape(n, -1, 32).astype(np.int64), q)
        want = sums.astype(np.float64) @ d.astype(np.float64)
        bound = np.zeros(n) if kind == "integers" else block_bound(sums, d[None, :])
        err = np.abs(y.astype(np.float64) - want)
        ok &= report("int8_matvec", f"N={n} K={k} {kind}", bool(np.all(np.isfinite(y)) and np.all(err <= bound)),
                     f"max error {err.max():.3g} (bound {bound.max():.3g})")
    return ok


def int8_row_bytes(k: int) -> int:
    return k + 32


def int8_rows(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Quantized rows [M, K] int8 + scales -> the kernels' row format (K bytes, f32 scale, padding)."""
    m, k = q.shape
    out = np.zeros((m, int8_row_bytes(k)), np.int8)
    out[:, :k] = q
    out[:, k:k + 4] = d.astype(F32).view(np.int8).reshape(m, 4)
    return out


def run_quantize(fn, ins: list, m: int, k: int, row_bytes: int, params: list) -> np.ndarray:
    """Call a quantization entry point over rows in two workgroups (the second past the end)."""
    xq = np.full((m, row_bytes), 0x55, np.int8)
    half = m // 2
    for begin, end in ((0, half), (half, m + 5)):
        fn(*[v for a in ins for v in memref(a)], *memref(xq), m, k, *params, begin, end)
    return xq


def check_int8_quantize(lib) -> bool:
    """Plain quantization: bit-exact against the f32 reference; the glue forms: their transform
    in float64, then the same quantization (at most 1 apart where the f32 transform rounds
    across a .5)."""
    rng, ok = np.random.default_rng(1), True
    plain = lib.iree_glm_int8_quantize_workgroup
    plain.argtypes = MEMREF * 2 + [SIZE] * 4
    silu = lib.iree_glm_int8_quantize_silu_mul_workgroup
    silu.argtypes = MEMREF * 3 + [SIZE] * 4
    rms = lib.iree_glm_int8_quantize_rms_norm_workgroup
    rms.argtypes = MEMREF * 3 + [SIZE, SIZE, ctypes.c_float, SIZE, SIZE]
    for m, k, kind in ((1, 32, "random"), (3, 96, "random"), (17, 2048, "random"), (4, 64, "zeros"), (2, 32, "tiny"),
                       (5, 160, "equal"), (3, 8192, "extremes")):
        x = activations(rng, (m, k), kind)
        xq = run_quantize(plain, [x], m, k, int8_row_bytes(k), [])
        want = int8_rows(*quantize_rows(x))
        ok &= report("int8_quantize", f"M={m} K={k} {kind}", bool(np.array_equal(xq[:, :k + 4], want[:, :k + 4])))
        gu = activations(rng, (m, 2 * k), kind) * F32(0.01) if kind == "random" else activations(rng, (m, 2 * k), kind)
        scale = (rng.random(2 * k) + 0.5).astype(F32)
        xq = run_quantize(silu, [gu, scale], m, k, int8_row_bytes(k), [])
        g, u = gu[:, :k].astype(np.float64) * scale[:k], gu[:, k:].astype(np.float64) * scale[k:]
        ok &= glue_close("int8_silu_mul", f"M={m} K={k} {kind}", xq, u * g / (1 + np.exp(-g)), k)
        wn = (rng.random(k) + 0.5).astype(F32)
        xq = run_quantize(rms, [x, wn], m, k, int8_row_bytes(k), [F32(1e-5)])
        xd = x.astype(np.float64)
        ref = wn * xd / np.sqrt((xd * xd).mean(axis=1, keepdims=True) + 1e-5)
        ok &= glue_close("int8_rms_norm", f"M={m} K={k} {kind}", xq, ref, k)
    return ok


def glue_close(suite: str, case: str, xq: np.ndarray, ref: np.ndarray, k: int) -> bool:
    q, d = quantize_rows(ref.astype(F32))
    got_d = xq[:, k:k + 4].copy().view(F32).ravel()
    dq = np.abs(xq[:, :k].astype(np.int64) - q)
    rel = np.abs(got_d.astype(np.float64) - d) / np.maximum(d, 1e-38)
    return report(suite, case, bool(dq.max() <= 1 and rel.max() <= 1e-5), f"max |dq| {dq.max()}, scale rel {rel.max():.2g}")


def check_int8_matmul(lib) -> bool:
    """Quantized rows x weights: exact (f32(integer sum) * row scale, bit for bit)."""
    fn = lib.iree_glm_int8_matmul_workgroup
    fn.argtypes = MEMREF * 3 + [SIZE] * 7
    rng, ok = np.random.default_rng(2), True
    for m, tiles, k, kind in ((1, 1, 32, "random"), (3, 3, 96, "random"), (17, 5, 1056, "random"), (4, 2, 4096, "extremes"),
                              (70, 2, 64, "random"), (5, 1, 2048, "equal"), (2, 1, 32, "zeros"), (9, 4, 16384, "random")):
        n = tiles * 16
        w = int8_weights(rng, n, k, kind)
        if kind == "zeros":
            q = np.zeros((m, k), np.int8)
        elif kind in ("extremes", "equal"):
            q = np.where(rng.random((m, k)) < 0.5, -127, 127).astype(np.int8) if kind == "extremes" else np.full((m, k), 127, np.int8)
        else:
            q = rng.integers(-127, 128, (m, k), dtype=np.int8)
        d = (rng.random(m) + 0.1).astype(F32)
        xq, packed = int8_rows(q, d), pack_int8(w)
        y = np.full((m, n), np.nan, F32)
        # A dispatch's grid: weight-tile ranges x ranges of at most 64 rows (M_CHUNK).
        for t0, t1 in ((0, tiles // 2), (tiles // 2, tiles + 2)):
            for m0 in range(0, m, 64):
                fn(*memref(xq), *memref(packed), *memref(y), m, tiles, k, t0, t1, m0, m0 + 64)
        sums = q.astype(np.int64) @ w.astype(np.int64).T
        want = sums.astype(F32) * d[:, None]
        ok &= report("int8_matmul", f"M={m} N={n} K={k} {kind}", bool(np.array_equal(y, want)),
                     f"max |sum| {np.abs(sums).max()}")
    return ok


SUITES = {"int8_matvec": check_int8_matvec, "int8_quantize": check_int8_quantize, "int8_matmul": check_int8_matmul}


def main(library: str, *suites: str) -> int:
    lib = ctypes.CDLL(library)
    ok = True
    for suite in suites:
        ok &= SUITES[suite](lib)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
