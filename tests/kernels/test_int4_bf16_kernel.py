"""The AMX set's bf16 int4 prompt path (kernels/x86_64_amx/int4.c: weights widened to bf16 B
tiles per piece of K, x's rows converted to bf16, tdpbf16ps) called directly against float64
products of exactly its rounded inputs: bf16(x) and bf16(dequantized weights). Shapes with
tails everywhere: odd M (pairs of 16-row blocks, then the rest), N past the last whole tile,
row and column ranges that split a call, K in one to several pieces, every offered group size.
Skipped with the reason on CPUs without AMX-BF16.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

from iree_glm.bundle.cpu_features import missing_features
from iree_glm.kernels import bf16, int4, toolchain
from iree_glm.transforms.quantize import GROUP_SIZES, dequantize_int4, quantize_int4

from ..helpers import MEMREF, kernel_library, memref

AMX = toolchain.X86_64_AMX
ROWS = AMX.rows_per_call("int4")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    reason = toolchain.unavailable_reason(AMX) or (f"the CPU lacks {', '.join(bf16.FEATURES)}" if missing_features(bf16.FEATURES) else None)
    if reason:
        pytest.skip(f"AMX bf16 int4 kernels unavailable: {reason}")
    return kernel_library(AMX.source("int4"), tmp_path_factory.mktemp("int4_bf16"),
                          {int4.BF16_CONVERT_SYMBOL: (2, 4), int4.BF16_MATMUL_SYMBOL: (4, 8)}, AMX)


def _matmul(lib, x: np.ndarray, q: np.ndarray, s: np.ndarray, group: int, n_ranges, m_ranges) -> np.ndarray:
    """The two dispatches' work, one call per workgroup: convert rows, then the matrix kernel."""
    m, k = x.shape
    n = q.shape[0]
    size = m * bf16.xb_row_bytes(k)
    raw = np.zeros(size + 64, np.int8)
    xb = raw[(-raw.ctypes.data) % 64:][:size]  # IREE's buffers are aligned
    for r0 in range(0, m, 5):
        lib.iree_glm_int4_convert_bf16_workgroup(*memref(x), *memref(xb), m, k, r0, r0 + 5)
    y = np.full((m, n), np.nan, np.float32)
    for n0, n1 in n_ranges:
        for m0, m1 in m_ranges:
            lib.iree_glm_int4_bf16_matmul_workgroup(*memref(xb), *memref(q), *memref(s), *memref(y), m, n, k, group, n0, n1, m0, m1)
    return y


def _reference(x: np.ndarray, q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """float64 product of bf16(x) and bf16(scale * (q - 8)) (nearest even)."""
    w = dequantize_int4(torch.from_numpy(q), torch.from_numpy(s))
    return (torch.from_numpy(x).to(torch.bfloat16).double() @ w.to(torch.bfloat16).double().T).numpy()


def _inputs(m: int, n: int, k: int, group: int):
    rng = np.random.default_rng(m * 31 + n * 7 + k + group)
    x = (rng.standard_normal((m, k)) * np.where(rng.random(k) < 0.05, 20, 1)).astype(np.float32)
    x[m // 2, : k // 2] = 0
    q, s = (np.ascontiguousarray(t.numpy()) for t in quantize_int4(torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)), group))
    return x, q, s


@pytest.mark.parametrize("group", GROUP_SIZES)
@pytest.mark.parametrize("m,n,groups,n_ranges,m_ranges", [
    (1, 16, 2, [(0, 16)], [(0, 256)]),  # one row: a lone 1-row block
    (37, 21, 3, [(0, 16), (16, 32)], [(0, 256)]),  # a pair of 16-row blocks + 5 rows; N = 21: a ragged tile
    (300, 72, 18, [(0, 48), (48, 80)], [(0, 256), (256, 512)]),  # two calls, the second partial; K in 1-9 pieces
    (17, 50, 33, [(0, 32), (32, 64)], [(0, 7), (7, 17)]),  # split rows: 7 and 10; the last tile pair ragged
])
def test_matches_float64_of_the_bf16_rounded_inputs(lib, m, n, groups, n_ranges, m_ranges, group):
    k = groups * group
    x, q, s = _inputs(m, n, k, group)
    got = _matmul(lib, x, q, s, group, n_ranges, m_ranges)
    want = _reference(x, q, s)
    assert not np.isnan(got).any()  # every output written
    # f32 sums of K exact bf16 products: error ~ sqrt(K) ulps of the partial sums' size
    np.testing.assert_allclose(got, want, rtol=0, atol=4e-7 * np.sqrt(k) * np.abs(want).max())


def test_is_not_the_int8_block_path(lib):
    """x = 1 + 2^-9 in one element: bf16 rounds it to 1, int8 blocks would keep more of it. The
    kernel's number is the bf16 one exactly (small integers times scale 1: exact sums)."""
    m, n, k, group = 1, 16, 64, 32
    x = np.ones((m, k), np.float32)
    x[0, 0] = 1 + 2.0 ** -9
    q = np.full((n, k // group, group // 2), 0x99, np.uint8).view(np.int8)  # every nibble 9: weight 1
    s = np.ones((n, k // group), np.float16).view(np.uint16)
    y = _matmul(lib, x, q, s, group, [(0, n)], [(0, m)])
    assert (y == k).all()


def test_ranges_write_only_their_outputs_and_a_call_takes_at_most_its_rows(lib):
    m, n, k, group = ROWS + 20, 48, 128, 32
    x, q, s = _inputs(m, n, k, group)
    y = _matmul(lib, x, q, s, group, [(16, 32)], [(0, m)])
    assert not np.isnan(y[:ROWS, 16:32]).any()
    assert np.isnan(y[ROWS:]).all() and np.isnan(y[:, :16]).all() and np.isnan(y[:, 32:]).all()


def test_python_constants_match_the_c_source():
    source = AMX.source("int4").read_text()
    assert f"WIDE_K = {int4.BF16_MAX_GROUP}," in source
    assert all(int4.fits_bf16(1024, g) for g in GROUP_SIZES) and not int4.fits_bf16(1024, 512)


@pytest.mark.parametrize("kind", ["silu_mul", "rms_norm"])
def test_glue_conversions_match_the_plain_one(lib, kind):
    """The conversions that compute x themselves (silu(gate) * up, RMSNorm) give the bf16 rows the
    plain conversion gives for x computed in numpy: equal but for a few 1-ulp roundings."""
    from ..passes.test_quantize_glue import EPS, _rms_norm, _silu_mul

    m, k = 21, 2816
    rng = np.random.default_rng(3)
    symbol = int4.BF16_GLUE_SYMBOLS[kind]
    getattr(lib, symbol).argtypes = MEMREF_ARGS[kind]
    if kind == "silu_mul":
        inp = (rng.standard_normal((m, 2 * k)) * 3).astype(np.float32)
        x = _silu_mul(inp)
    else:
        inp = (rng.standard_normal((m, k)) * np.where(rng.random(k) < 0.05, 20, 1)).astype(np.float32)
        w = rng.uniform(0.5, 1.5, k).astype(np.float32)
        x = _rms_norm(inp, w)
    row = bf16.xb_row_bytes(k)
    want, got = np.zeros(m * row, np.int8), np.zeros(m * row, np.int8)
    lib.iree_glm_int4_convert_bf16_workgroup(*memref(np.ascontiguousarray(x, np.float32)), *memref(want), m, k, 0, m)
    if kind == "silu_mul":
        getattr(lib, symbol)(*memref(inp), *memref(got), m, k, 0, m)
    else:
        getattr(lib, symbol)(*memref(inp), *memref(w), *memref(got), m, k, ctypes.c_float(EPS), 0, m)
    a, b = got.view(np.int16).astype(int), want.view(np.int16).astype(int)
    assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.99


MEMREF_ARGS = {  # the glue conversions' arguments: memrefs, then indices (rms_norm: eps, an f32)
    "silu_mul": [*MEMREF * 2, *[ctypes.c_size_t] * 4],
    "rms_norm": [*MEMREF * 3, *[ctypes.c_size_t] * 2, ctypes.c_float, *[ctypes.c_size_t] * 2],
}
