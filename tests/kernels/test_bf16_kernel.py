"""The bf16 kernels (kernels/x86_64_amx/bf16.c: AMX tdpbf16ps prompt kernel, vdpbf16ps
matrix-vector kernel) called directly against float64 products of the bf16-rounded inputs, on
shapes with tails in every dimension: odd M (row blocks of 16, pairs of blocks), N not a multiple
of 16 (zero rows of the layout) and odd tile counts, K odd or not a multiple of the 32-k step.
Skipped with the reason on CPUs without AMX-BF16 / AVX-512 BF16.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iree_glm.bundle.cpu_features import missing_features
from iree_glm.kernels import bf16, toolchain
from iree_glm.transforms.quantize import pack_bf16, unpack_bf16

from ..helpers import kernel_library, memref

ROWS = toolchain.X86_64_AMX.rows_per_call("bf16")  # rows of x one matrix-kernel call takes


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    reason = toolchain.unavailable_reason(toolchain.X86_64_AMX) or \
        (f"the CPU lacks {', '.join(bf16.FEATURES)}" if missing_features(bf16.FEATURES) else None)
    if reason:
        pytest.skip(f"bf16 kernels unavailable: {reason}")
    return kernel_library(toolchain.X86_64_AMX.source("bf16"), tmp_path_factory.mktemp("bf16"),
                          {bf16.CONVERT_SYMBOL: (2, 4), bf16.MATVEC_SYMBOL: (3, 5), bf16.MATMUL_SYMBOL: (3, 7)},
                          toolchain.X86_64_AMX)


def _inputs(m: int, n: int, k: int):
    rng = np.random.default_rng(m * 7919 + n * 31 + k)
    x = (rng.standard_normal((m, k)) * np.where(rng.random((m, k)) < 0.02, 30, 1)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    q = pack_bf16(torch.from_numpy(w))
    return x, w, np.ascontiguousarray(q.view(torch.int16).numpy())


def _reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """float64 product of the inputs rounded to bf16 (nearest even, as the kernels and IREE's demotion)."""
    def rounded(a):
        return torch.from_numpy(a).to(torch.bfloat16).double()
    return (rounded(x) @ rounded(w).T).numpy()


def _close(y: np.ndarray, want: np.ndarray, k: int) -> None:
    # f32 sums of K exact bf16 products: error ~ sqrt(K) ulps of the partial sums' size
    assert not np.isnan(y).any()
    np.testing.assert_allclose(y, want, rtol=0, atol=4e-7 * np.sqrt(k) * np.abs(want).max())


def test_the_layout_round_trips_and_pads():
    w = torch.randn(20, 7)
    q = pack_bf16(w)
    assert q.shape == (2, 4, 16, 2) and q.dtype == torch.bfloat16
    back = unpack_bf16(q)
    assert torch.equal(back[:20, :7], w.to(torch.bfloat16).float())
    assert not back[20:].any() and not back[:, 7:].any()  # zero rows past N, a zero past an odd K


@pytest.mark.parametrize("m,n,k", [
    (1, 16, 32),  # one tile, one step
    (33, 40, 50),  # 3 tiles (a pair and one), K tail of 18 in the last 32-k step
    (47, 48, 33),  # odd K: the last pair's second weight is zero
    (70, 64, 1000),  # 2 pairs of row blocks + 6 rows; K over several 256-k chunks
    (16, 20, 2816),  # one full block, no second; N padded
    (300, 32, 96),  # more rows than a call takes: two row ranges
])
def test_matmul_kernel_matches_the_bf16_reference(lib, m, n, k):
    x, w, q = _inputs(m, n, k)
    tiles = q.shape[0]
    xb = np.zeros(m * bf16.xb_row_bytes(k), np.int8)
    for r0 in range(0, m, 16):  # the conversion dispatch's workgroups
        lib.iree_glm_bf16_convert_workgroup(*memref(x), *memref(xb), m, k, r0, r0 + 16)
    y = np.full((m, tiles * 16), np.nan, np.float32)
    per = 3
    for t0 in range(0, tiles, per):  # ranges past the last tile are clamped
        for m0 in range(0, m, ROWS):
            lib.iree_glm_bf16_matmul_workgroup(*memref(xb), *memref(q), *memref(y), m, tiles, k, t0, t0 + per, m0, m0 + ROWS)
    _close(y[:, :n], _reference(x, w), k)
    assert not y[:, n:].any()  # the layout's zero rows


@pytest.mark.parametrize("m,n,k", [(1, 48, 64), (1, 20, 2816), (3, 40, 50), (2, 16, 34)])
def test_matvec_kernel_matches_the_bf16_reference(lib, m, n, k):
    """Decode (one row) and verify (a few rows); K even as the graph passes it (an odd K is
    padded to the layout's pairs by the layer)."""
    x, w, q = _inputs(m, n, k)
    tiles = q.shape[0]
    y = np.full((m, tiles * 16), np.nan, np.float32)
    for t0 in range(0, tiles, 2):
        lib.iree_glm_bf16_matvec_workgroup(*memref(x), *memref(q), *memref(y), m, tiles, k, t0, t0 + 2)
    _close(y[:, :n], _reference(x, w), k)


def test_verify_rows_are_decode_rows_bit_for_bit(lib):
    """Speculative decoding accepts a draft only where verify's row equals a decode step's."""
    x, _, q = _inputs(4, 48, 1024)
    tiles = q.shape[0]
    rows = np.zeros((4, tiles * 16), np.float32)
    lib.iree_glm_bf16_matvec_workgroup(*memref(x), *memref(q), *memref(rows), 4, tiles, 1024, 0, tiles)
    for r in range(4):
        one = np.zeros(tiles * 16, np.float32)
        xr = np.ascontiguousarray(x[r])
        lib.iree_glm_bf16_matvec_workgroup(*memref(xr), *memref(q), *memref(one), 1, tiles, 1024, 0, tiles)
        assert np.array_equal(one, rows[r])


def test_conversion_rounds_to_nearest_even_and_zero_pads(lib):
    k = 40
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 1 + 2**-8 + 2**-20] * 10, np.float32).reshape(1, k)
    xb = np.full(bf16.xb_row_bytes(k), -1, np.int8)
    lib.iree_glm_bf16_convert_workgroup(*memref(x), *memref(xb), 1, k, 0, 1)
    got = xb.view(np.int16)
    want = torch.from_numpy(x[0]).to(torch.bfloat16).view(torch.int16).numpy()
    assert np.array_equal(got[:k], want) and not got[k:].any()  # ties to even, as torch; zeros to 64
