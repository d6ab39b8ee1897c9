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


def entry(lib, name: str, argtypes: list):
    """The library's function `name` with its C argument types."""
    fn = getattr(lib, name)
    fn.argtypes = argtypes
    return fn


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


def weights(rng, n: int, k: int, kind: str, lo: int, hi: int) -> np.ndarray:
    """[N, K] integer weights in [lo, hi] (int8: -127, 127; int4: -8, 7): random, or at the extremes, or all lo."""
    if kind == "extremes":
        return np.where(rng.random((n, k)) < 0.5, lo, hi).astype(np.int8)
    if kind == "equal":
        return np.full((n, k), lo, np.int8)
    return rng.integers(lo, hi + 1, (n, k), dtype=np.int8)


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
    fn = entry(lib, "iree_glm_int8_matvec_workgroup", MEMREF * 3 + [SIZE] * 4)
    rng, ok = np.random.default_rng(0), True
    cases = [(16, 32, "random"), (48, 96, "random"), (112, 480, "random"), (16, 16384, "extremes"),
             (32, 64, "zeros"), (80, 160, "tiny"), (16, 4096, "extremes"), (32, 1024, "integers"), (48, 256, "equal")]
    for n, k, kind in cases:
        w = weights(rng, n, k, kind, -127, 127)
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


def verify_rows(rng, m: int, k: int) -> np.ndarray:
    """m rows of x for a verify call: large and small blocks, and an all-zero block."""
    x = (rng.standard_normal((m, k)) * np.where(rng.random((m, k)) < 0.05, 20, 1)).astype(F32)
    x[:, :32] = 0
    return x


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a.view(np.uint32), b.view(np.uint32)))


def check_int8_matvec_rows(lib) -> bool:
    """Speculative verification's kernel: each of m rows, bit for bit, the decode kernel's result
    for that row alone (m = 1 .. 17; K = 16384 takes several passes of rows)."""
    rows_fn = entry(lib, "iree_glm_int8_matvec_rows_workgroup", MEMREF * 3 + [SIZE] * 5)
    one_fn = entry(lib, "iree_glm_int8_matvec_workgroup", MEMREF * 3 + [SIZE] * 4)
    rng, ok = np.random.default_rng(6), True
    for m, tiles, k in ((1, 1, 32), (2, 3, 96), (3, 2, 1024), (5, 5, 480), (9, 4, 2048), (16, 2, 256), (17, 3, 160), (4, 1, 16384)):
        w, x = weights(rng, tiles * 16, k, "random", -127, 127), verify_rows(rng, m, k)
        packed, y = pack_int8(w), np.full((m, tiles * 16), np.nan, F32)
        for begin, end in ((0, tiles // 2), (tiles // 2, tiles + 3)):  # as a dispatch splits tiles; past the end
            rows_fn(*memref(x), *memref(packed), *memref(y), m, tiles, k, begin, end)
        ok_case = True
        for r in range(m):
            xr, one = np.ascontiguousarray(x[r]), np.full(tiles * 16, np.nan, F32)
            one_fn(*memref(xr), *memref(packed), *memref(one), tiles, k, 0, tiles)
            ok_case &= same_bits(y[r], one)
        ok &= report("int8_matvec_rows", f"M={m} N={tiles * 16} K={k}", ok_case)
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
    plain = entry(lib, "iree_glm_int8_quantize_workgroup", MEMREF * 2 + [SIZE] * 4)
    silu = entry(lib, "iree_glm_int8_quantize_silu_mul_workgroup", MEMREF * 3 + [SIZE] * 4)
    rms = entry(lib, "iree_glm_int8_quantize_rms_norm_workgroup", MEMREF * 3 + [SIZE, SIZE, ctypes.c_float, SIZE, SIZE])
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
    fn = entry(lib, "iree_glm_int8_matmul_workgroup", MEMREF * 3 + [SIZE] * 7)
    rng, ok = np.random.default_rng(2), True
    for m, tiles, k, kind in ((1, 1, 32, "random"), (3, 3, 96, "random"), (17, 5, 1056, "random"), (4, 2, 4096, "extremes"),
                              (70, 2, 64, "random"), (5, 1, 2048, "equal"), (2, 1, 32, "zeros"), (9, 4, 16384, "random")):
        n = tiles * 16
        w = weights(rng, n, k, kind, -127, 127)
        if kind == "zeros":
            q = np.zeros((m, k), np.int8)
        elif kind in ("extremes", "equal"):
            q = np.where(rng.random((m, k)) < 0.5, -127, 127).astype(np.int8) if kind == "extremes" else np.full((m, k), 127, np.int8)
        else:
            q = rng.integers(-127, 128, (m, k), dtype=np.int8)
        d = (rng.random(m) + 0.1).astype(F32)
        xq, packed = int8_rows(q, d), pack_int8(w)
        y = np.full((m, n), np.nan, F32)
        # A dispatch's grid: weight-tile ranges x ranges of at most 64 rows (the set's rows_per_call).
        for t0, t1 in ((0, tiles // 2), (tiles // 2, tiles + 2)):
            for m0 in range(0, m, 64):
                fn(*memref(xq), *memref(packed), *memref(y), m, tiles, k, t0, t1, m0, m0 + 64)
        sums = q.astype(np.int64) @ w.astype(np.int64).T
        want = sums.astype(F32) * d[:, None]
        ok &= report("int8_matmul", f"M={m} N={n} K={k} {kind}", bool(np.array_equal(y, want)),
                     f"max |sum| {np.abs(sums).max()}")
    return ok


# --- int4 -----------------------------------------------------------------------------------


def pack_int4(w: np.ndarray, group: int, kind: str, rng) -> tuple[np.ndarray, np.ndarray]:
    """[N, K] in [-8, 7] -> (qweight [N, K/G, G/2] nibbles + 8, f16 scales [N, K/G]) (quantize_int4's layout)."""
    n, k = w.shape
    u = (w.astype(np.int16) + 8).reshape(n, k // group, group)
    packed = (u[:, :, : group // 2] | (u[:, :, group // 2:] << 4)).astype(np.uint8).view(np.int8)
    scales = np.full((n, k // group), 1.0 if kind in ("equal", "integers") else 0.0)
    if kind not in ("equal", "integers"):
        scales = rng.random((n, k // group)) * 0.1 + 1e-3
    return np.ascontiguousarray(packed), scales.astype(np.float16)


def int4_blocks(x: np.ndarray, group: int) -> np.ndarray:
    """x [..., K] -> its activation blocks [..., K/32, 32] in the weights' order (part j of group g:
    x[gG + 16j ..] then x[gG + G/2 + 16j ..])."""
    *lead, k = x.shape
    v = x.reshape(*lead, k // group, 2, group // 32, 16)
    return np.swapaxes(v, -3, -2).reshape(*lead, k // 32, 32)


def int4_reference(q: np.ndarray, d: np.ndarray, w: np.ndarray, scales: np.ndarray, group: int):
    """q [M, K/32, 32] int8 blocks, d [M, K/32] -> (y [M, N] float64, f32 error bound)."""
    n, k = w.shape
    wb = int4_blocks(w.astype(np.int64), group)  # [N, K/32, 32]
    sums = np.einsum("mcj,ncj->mnc", q.astype(np.int64), wb)
    blk_scale = d[:, None, :].astype(np.float64) * np.repeat(scales.astype(np.float64), group // 32, axis=1)[None]
    return (sums * blk_scale).sum(axis=-1), block_bound(sums, blk_scale)


def check_int4_matvec(lib) -> bool:
    fn = entry(lib, "iree_glm_int4_matvec_workgroup", MEMREF * 4 + [SIZE] * 5)
    rng, ok = np.random.default_rng(3), True
    for n, k, group, kind in ((1, 32, 32, "random"), (7, 64, 32, "random"), (13, 256, 128, "random"), (16, 8192, 32, "extremes"),
                              (5, 128, 64, "zeros"), (9, 96, 32, "tiny"), (4, 4096, 4096, "extremes"), (6, 512, 256, "equal"),
                              (33, 2048, 64, "random"), (11, 1024, 128, "integers")):
        w = weights(rng, n, k, kind, -8, 7)
        x = activations(rng, k, kind)
        if kind == "integers":  # d = 1 and scale 1: y is the integer sum itself (< 2^24: exact in f32)
            x = rng.integers(-127, 128, k).astype(F32)
            x[::16] = 127
        packed, scales = pack_int4(w, group, kind, rng)
        y = np.full(n, np.nan, F32)
        for begin, end in ((0, n // 2), (n // 2, n + 3)):  # as a dispatch splits rows; past the end
            fn(*memref(x), *memref(packed), *memref(scales), *memref(y), n, k, group, begin, end)
        q, d = quantize_blocks(int4_blocks(x, group))
        want, bound = int4_reference(q[None], d[None], w, scales, group)
        err = np.abs(y.astype(np.float64) - want[0])
        if kind == "integers":
            bound = np.zeros_like(bound)
        ok &= report("int4_matvec", f"N={n} K={k} G={group} {kind}", bool(np.all(np.isfinite(y)) and np.all(err <= bound[0])),
                     f"max error {err.max():.3g} (bound {bound.max():.3g})")
    return ok


def check_int4_matvec_rows(lib) -> bool:
    """The same for int4: the weight rows in the decode kernel's groups of four from row_begin
    (ranges of whole strips of 8, as the dispatch's) and the rows past the last four."""
    rows_fn = entry(lib, "iree_glm_int4_matvec_rows_workgroup", MEMREF * 4 + [SIZE] * 6)
    one_fn = entry(lib, "iree_glm_int4_matvec_workgroup", MEMREF * 4 + [SIZE] * 5)
    rng, ok = np.random.default_rng(7), True
    for m, n, k, group in ((1, 16, 32, 32), (2, 13, 256, 128), (3, 7, 64, 32), (5, 21, 512, 64), (9, 16, 2048, 128),
                           (16, 11, 96, 32), (17, 8, 128, 64), (6, 12, 8192, 256)):
        w, x = weights(rng, n, k, "random", -8, 7), verify_rows(rng, m, k)
        packed, scales = pack_int4(w, group, "random", rng)
        y = np.full((m, n), np.nan, F32)
        for begin, end in ((0, 8), (8, n + 3)):
            rows_fn(*memref(x), *memref(packed), *memref(scales), *memref(y), m, n, k, group, begin, end)
        ok_case = True
        for r in range(m):
            xr, one = np.ascontiguousarray(x[r]), np.full(n, np.nan, F32)
            for begin, end in ((0, 8), (8, n + 3)):
                one_fn(*memref(xr), *memref(packed), *memref(scales), *memref(one), n, k, group, begin, end)
            ok_case &= same_bits(y[r], one)
        ok &= report("int4_matvec_rows", f"M={m} N={n} K={k} G={group}", ok_case)
    return ok


def int4_row_bytes(k: int) -> int:
    return k + (k // 32 * 8 + 31) // 32 * 32


def int4_rows(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Blocks q [M, K/32, 32] + scales [M, K/32] -> the kernels' row format (K int8, f32 dx, i32 8 * block sums)."""
    m, blocks, _ = q.shape
    k = blocks * 32
    out = np.zeros((m, int4_row_bytes(k)), np.int8)
    out[:, :k] = q.reshape(m, k)
    out[:, k:k + 4 * blocks] = d.astype(F32).view(np.int8).reshape(m, -1)
    out[:, k + 4 * blocks:k + 8 * blocks] = (8 * q.astype(np.int32).sum(axis=2)).astype(np.int32).view(np.int8).reshape(m, -1)
    return out


def check_int4_quantize(lib) -> bool:
    """Plain quantization bit-exact against the f32 reference; glue forms within 1 (glue_close's reasoning)."""
    rng, ok = np.random.default_rng(4), True
    plain = entry(lib, "iree_glm_int4_quantize_workgroup", MEMREF * 2 + [SIZE] * 5)
    silu = entry(lib, "iree_glm_int4_quantize_silu_mul_workgroup", MEMREF * 2 + [SIZE] * 5)
    rms = entry(lib, "iree_glm_int4_quantize_rms_norm_workgroup", MEMREF * 3 + [SIZE, SIZE, SIZE, ctypes.c_float, SIZE, SIZE])
    for m, k, group, kind in ((1, 32, 32, "random"), (3, 256, 128, "random"), (17, 2048, 64, "random"), (4, 64, 32, "zeros"),
                              (2, 96, 32, "tiny"), (5, 512, 512, "equal"), (3, 8192, 128, "extremes")):
        rb = int4_row_bytes(k)
        x = activations(rng, (m, k), kind)
        xq = run_quantize(plain, [x], m, k, rb, [group])
        want = int4_rows(*quantize_blocks_rows(int4_blocks(x, group)))
        ok &= report("int4_quantize", f"M={m} K={k} G={group} {kind}", bool(np.array_equal(xq[:, :k + 8 * (k // 32)], want[:, :k + 8 * (k // 32)])))
        gu = activations(rng, (m, 2 * k), kind) * F32(0.01) if kind == "random" else activations(rng, (m, 2 * k), kind)
        xq = run_quantize(silu, [gu], m, k, rb, [group])
        g, u = gu[:, :k].astype(np.float64), gu[:, k:].astype(np.float64)
        ok &= int4_glue_close("int4_silu_mul", f"M={m} K={k} G={group} {kind}", xq, u * g / (1 + np.exp(-g)), k, group)
        wn = (rng.random(k) + 0.5).astype(F32)
        xq = run_quantize(rms, [x, wn], m, k, rb, [group, F32(1e-5)])
        xd = x.astype(np.float64)
        ref = wn * xd / np.sqrt((xd * xd).mean(axis=1, keepdims=True) + 1e-5)
        ok &= int4_glue_close("int4_rms_norm", f"M={m} K={k} G={group} {kind}", xq, ref, k, group)
    return ok


def quantize_blocks_rows(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[M, B, 32] -> quantize_blocks per row."""
    m, b, _ = blocks.shape
    q, d = quantize_blocks(blocks.reshape(m * b, 32).astype(F32))
    return q.reshape(m, b, 32), d.reshape(m, b)


def int4_glue_close(suite: str, case: str, xq: np.ndarray, ref: np.ndarray, k: int, group: int) -> bool:
    q, d = quantize_blocks_rows(int4_blocks(ref.astype(F32), group))
    blocks = k // 32
    got_q = xq[:, :k].astype(np.int64)
    got_d = xq[:, k:k + 4 * blocks].copy().view(F32)
    got_s = xq[:, k + 4 * blocks:k + 8 * blocks].copy().view(np.int32)
    dq = np.abs(got_q - q.reshape(-1, k))
    rel = np.abs(got_d.astype(np.float64) - d) / np.maximum(d, 1e-38)
    sums_ok = np.array_equal(got_s, 8 * got_q.reshape(-1, blocks, 32).sum(axis=2))
    return report(suite, case, bool(dq.max() <= 1 and rel.max() <= 1e-5 and sums_ok),
                  f"max |dq| {dq.max()}, scale rel {rel.max():.2g}, block sums {'ok' if sums_ok else 'wrong'}")


def check_int4_matmul(lib) -> bool:
    fn = entry(lib, "iree_glm_int4_matmul_workgroup", MEMREF * 4 + [SIZE] * 8)
    rng, ok = np.random.default_rng(5), True
    for m, n, k, group, kind in ((1, 16, 32, 32, "random"), (3, 13, 96, 32, "random"), (17, 40, 2080, 32, "random"),
                                 (4, 16, 4096, 1024, "extremes"), (70, 16, 64, 64, "random"), (5, 24, 512, 128, "equal"),
                                 (2, 16, 64, 32, "zeros"), (9, 32, 8192, 128, "random"), (6, 20, 1024, 64, "integers")):
        w = weights(rng, n, k, kind, -8, 7)
        packed, scales = pack_int4(w, group, kind, rng)
        if kind == "zeros":
            q = np.zeros((m, k // 32, 32), np.int64)
        elif kind in ("extremes", "equal"):
            q = np.where(rng.random((m, k // 32, 32)) < 0.5, -127, 127) if kind == "extremes" else np.full((m, k // 32, 32), 127)
        else:
            q = rng.integers(-127, 128, (m, k // 32, 32))
        d = (rng.random((m, k // 32)) * 0.01 + 1e-3).astype(F32)
        if kind == "integers":  # y is the integer sum itself
            d = np.ones_like(d)
        xq = int4_rows(q, d)
        y = np.full((m, n), np.nan, F32)
        # A dispatch's grid: panels of 16 weight rows x ranges of at most 64 rows of x.
        for n0, n1 in ((0, 16), (16, n + 16)):
            for m0 in range(0, m, 64):
                fn(*memref(xq), *memref(packed), *memref(scales), *memref(y), m, n, k, group, n0, min(n1, n), m0, min(m0 + 64, m))
        want, bound = int4_reference(q, d, w, scales, group)
        err = np.abs(y.astype(np.float64) - want)
        if kind == "integers":
            bound = np.zeros_like(bound)
        ok &= report("int4_matmul", f"M={m} N={n} K={k} G={group} {kind}", bool(np.all(np.isfinite(y)) and np.all(err <= bound)),
                     f"max error {err.max():.3g} (bound {bound.max():.3g})")
    return ok


# start, s (positions start.. over n = start + s keys), group, (local, global_) (0, 0: causal), d, e
ATTENTION_CASES = [
    (0, 300, 2, (256, 16), 64, 64),  # a whole prompt, the window reaching the globals
    (1024, 256, 2, (256, 16), 64, 64),  # a chunk after earlier chunks
    (1000, 129, 4, (256, 16), 64, 64),  # a chunk off the key blocks, 4 query heads per KV head
    (2047, 1, 2, (256, 16), 64, 64),  # decode: the query heads of one position
    (4000, 1, 8, (256, 16), 64, 64),  # decode, far out, 8 rows (two vectors of one mask row)
    (700, 64, 2, (64, 70), 64, 64),  # globals over more than one block, window of one block
    (500, 40, 1, (1, 1), 64, 64),  # each query sees the first key and itself
    (0, 37, 1, (0, 0), 40, 24),  # causal, odd lengths: 37 rows (not a multiple of 4), d 40, e 24
    (90, 75, 3, (0, 0), 128, 8),  # causal, 3 query heads per KV head, widest d, narrowest e
    (0, 200, 2, (0, 0), 64, 64),  # causal (dense) prompt
]


def check_attention(lib) -> bool:
    """The flash-attention kernel (built with IREE_GLM_ATTENTION_PROBE): attention_reference's
    checks, the same as the x86 kernel's."""
    from tests.kernels import attention_reference as ref

    ref.bind(lib)
    ok = True
    for start, s, group, (local, global_), d, e in ATTENTION_CASES:
        problems = ref.check_case(lib, start, s, group, local, global_, d=d, e=e)
        ok &= report("attention", f"start={start} S={s} group={group} local={local} global={global_} D={d} E={e}",
                     not problems, "; ".join(problems))
    return ok



def check_attention_rows(lib) -> bool:
    """The flash kernel as an exact verify calls it: every row of an R-row call is the one-row
    call's, bit for bit, and close to a float64 softmax (attention_reference.check_rows_case, the
    x86 test's)."""
    from tests.kernels import attention_reference as ref

    ref.bind(lib)
    ok = True
    for case in ref.ROWS_CASES:
        problems = ref.check_rows_case(lib, *case)
        ok &= report("attention_rows", "start={} group={} heads={} D={} E={}".format(*case), not problems, "; ".join(problems))
    return ok

SUITES = {"attention": check_attention, "attention_rows": check_attention_rows, "int8_matvec_rows": check_int8_matvec_rows,
          "int4_matvec_rows": check_int4_matvec_rows, "int4_matvec": check_int4_matvec, "int4_quantize": check_int4_quantize, "int4_matmul": check_int4_matmul,
          "int8_matvec": check_int8_matvec, "int8_quantize": check_int8_quantize, "int8_matmul": check_int8_matmul}


def main(library: str, *suites: str) -> int:
    lib = ctypes.CDLL(library)
    ok = True
    for suite in suites:
        ok &= SUITES[suite](lib)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
