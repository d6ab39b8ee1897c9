"""The int4 matrix kernel of every x86-64 kernel set (kernels/x86_64_avx2/int4.c, and
x86_64_avx512/int4.c's vpdpbusd kernel where the CPU has AVX-512 VNNI; skipped with the reason
elsewhere) called directly on shapes that exercise its tiling: rows of x not a multiple of its 4-row tile, weight rows not a multiple
of its 8-row strips, several groups and K chunks, workgroup ranges that split M and N.

The C file is compiled as a shared library with the flags IREE's object gets and called through
ctypes with the memref arguments the dispatches pass (base, aligned base, offset, size, stride).
The reference is torch's model of the kernel (quant.quantize_activations, dequantize_int4).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iree_glm.kernels import int4 as int4_kernel
from iree_glm.transforms.quantize import GROUP_SIZES, dequantize_int4, quantize_activations, quantize_int4

from ..helpers import memref, set_library, x86_kernel_sets


X86_SETS = x86_kernel_sets()


@pytest.fixture(scope="module", params=X86_SETS, ids=lambda s: s.short)
def lib(request, tmp_path_factory):
    """Each x86-64 kernel set's int4 kernels (the same entry points and layouts)."""
    return set_library(request.param, "int4", tmp_path_factory,
                       {"iree_glm_int4_quantize_workgroup": (2, 5), "iree_glm_int4_matmul_workgroup": (4, 8),
                           "iree_glm_int4_matvec_workgroup": (4, 5), "iree_glm_int4_matvec_rows_workgroup": (4, 6)})


def _matmul(lib, x: np.ndarray, q: np.ndarray, s: np.ndarray, group: int, n_ranges, m_ranges) -> np.ndarray:
    """The two dispatches' work, one call per workgroup: quantize rows, then the matrix kernel."""
    m, k = x.shape
    n = q.shape[0]
    xq = np.zeros(m * int4_kernel.xq_row_bytes(k) + 64, np.int8)
    off = (-xq.ctypes.data) % 32  # IREE's buffers are aligned
    xq = xq[off: off + m * int4_kernel.xq_row_bytes(k)]
    for r0 in range(0, m, int4_kernel.QUANT_ROWS):
        lib.iree_glm_int4_quantize_workgroup(*memref(x), *memref(xq), m, k, group, r0, r0 + int4_kernel.QUANT_ROWS)
    y = np.full((m, n), np.nan, np.float32)
    for n0, n1 in n_ranges:
        for m0, m1 in m_ranges:
            lib.iree_glm_int4_matmul_workgroup(*memref(xq), *memref(q), *memref(s), *memref(y), m, n, k, group, n0, n1, m0, m1)
    return y


def _reference(x: np.ndarray, q: np.ndarray, s: np.ndarray, group: int) -> np.ndarray:
    w = dequantize_int4(torch.from_numpy(q), torch.from_numpy(s)).double()
    return (quantize_activations(torch.from_numpy(x), group).double() @ w.T).numpy()


@pytest.mark.parametrize("m,n,k,group,n_ranges,m_ranges", [
    (13, 40, 96, 32, [(0, 16), (16, 32), (32, 48)], [(0, 64)]),  # 3 + 4-row tiles; N in strips, the last range past N
    (7, 21, 4224, 64, [(0, 24)], [(0, 3), (3, 7)]),  # N = 21: a partial strip; K = 4224: three K chunks; M split
    (70, 8, 384, 128, [(0, 8)], [(0, 64), (64, 128)]),  # two ranges of 64 rows (a call of any set), the second partial
    (1, 16, 64, 32, [(0, 8), (8, 16)], [(0, 64)]),  # one row of x (the matrix kernel's smallest case)
    (9, 50, 2048, 32, [(0, 48), (48, 64)], [(0, 64)]),  # 32-row pairs of strips, a half-empty pair, a 2-row strip
])
def test_matrix_kernel_matches_its_torch_model(lib, m, n, k, group, n_ranges, m_ranges):
    rng = np.random.default_rng(m * 1000 + k)
    x = (rng.standard_normal((m, k)) * np.where(rng.random(k) < 0.05, 20, 1)).astype(np.float32)  # a few outliers
    x[m // 2, : k // 2] = 0  # all-zero blocks: scale 0
    q, s = (t.numpy() for t in quantize_int4(torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)), group))
    got = _matmul(lib, x, np.ascontiguousarray(q), np.ascontiguousarray(s), group, n_ranges, m_ranges)
    want = _reference(x, q, s, group)
    assert not np.isnan(got).any()  # every output written
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_matrix_kernel_extremes_are_exact(lib):
    """Nibbles at 0 and 15 (weights -8 and 7) against x at +-127: the largest products and block
    sums, exact (no i16 pair sums to saturate, the +8 offset removed in integers)."""
    m, n, k, group = 5, 32, 256, 64
    q = np.where(np.arange(n * k // 2).reshape(n, k // group, group // 2) % 3 == 0, 0, -1).astype(np.int8)  # 0x00 / 0xFF
    s = np.ones((n, k // group), np.float16)
    x = np.tile(np.where(np.arange(k) % 2 == 0, 1.0, -1.0).astype(np.float32), (m, 1))
    got = _matmul(lib, x, q, s, group, [(0, n)], [(0, 64)])
    want = x.astype(np.float64) @ dequantize_int4(torch.from_numpy(q), torch.from_numpy(s)).double().numpy().T
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())  # f32 rounding of x's scale 1/127 only


@pytest.mark.parametrize("kernel_set", X86_SETS, ids=lambda s: s.short)
def test_python_constants_match_the_c_source(kernel_set):
    """int4_kernel.py admits groups up to MATMUL_MAX_GROUP: each set's matrix kernel walks K in
    chunks of whole groups (CHUNK_K), which must hold one; the rows per call the dispatch gives
    are the C kernel's limit (AMX_MAX_ROWS, else the 64 of int4_matmul.h's callers); decode's
    workgroups take whole strips of the decode kernel's DECODE_STRIP rows."""
    import re

    chain, level = [], kernel_set  # the set's file after the files it includes, down to the AVX2 one
    while level is not None:
        chain.insert(0, level.source("int4"))
        level = level.base
    source = "".join(dict.fromkeys(p.read_text() for p in chain))
    chunk = int(re.findall(r"CHUNK_K = (\d+)", source)[-1])
    assert int4_kernel.MATMUL_MAX_GROUP <= chunk
    limits = re.findall(r"AMX_MAX_ROWS = (\d+)", source)
    assert kernel_set.rows_per_call("int4") == (int(limits[0]) if limits else 64)
    assert int4_kernel.DECODE_STRIP == int(re.findall(r"DECODE_STRIP = (\d+)", source)[-1])
    big = int4_kernel.MATMUL_MAX_GROUP
    assert not int4_kernel.fits(4 * big, 2 * big, None) and int4_kernel.fits(4 * big, big, None)


def test_workgroup_ranges_write_only_their_outputs(lib):
    """A workgroup writes y[m0:m1, n0:n1] and nothing else (workgroups run concurrently)."""
    rng = np.random.default_rng(7)
    m, n, k, group = 9, 24, 64, 32
    x = rng.standard_normal((m, k)).astype(np.float32)
    q, s = (np.ascontiguousarray(t.numpy()) for t in quantize_int4(torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)), group))
    y = _matmul(lib, x, q, s, group, [(8, 16)], [(2, 7)])
    assert not np.isnan(y[2:7, 8:16]).any()
    y[2:7, 8:16] = np.nan
    assert np.isnan(y).all()


@pytest.mark.parametrize("symbol", ["iree_glm_int4_matvec_workgroup", "iree_glm_int4_matvec_rows_workgroup"])
def test_decode_workgroups_write_only_their_rows(lib, symbol):
    """Decode and verify workgroups write y[:, r0:r1] and nothing else, where a range starts and
    ends inside the kernels' strips of weight rows (the last strip's spare lanes are not stored)."""
    rng = np.random.default_rng(11)
    m, n, k, group = 3, 29, 96, 32
    q, s = (np.ascontiguousarray(t.numpy()) for t in quantize_int4(torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)), group))
    s = np.ascontiguousarray(s.view(np.uint16))
    for r0, r1 in ((4, 13), (5, 6), (17, 29)):
        x = rng.standard_normal((m, k)).astype(np.float32)
        if symbol == "iree_glm_int4_matvec_workgroup":
            x = x[:1]
            y = np.full((1, n), np.nan, np.float32)
            lib.iree_glm_int4_matvec_workgroup(*memref(np.ascontiguousarray(x[0])), *memref(q), *memref(s), *memref(y), n, k, group, r0, r1)
        else:
            y = np.full((m, n), np.nan, np.float32)
            lib.iree_glm_int4_matvec_rows_workgroup(*memref(x), *memref(q), *memref(s), *memref(y), m, n, k, group, r0, r1)
        np.testing.assert_allclose(y[:, r0:r1], _reference(x, q, s.view(np.float16), group)[:, r0:r1], rtol=1e-4, atol=1e-4)
        y[:, r0:r1] = np.nan
        assert np.isnan(y).all(), f"rows {r0}..{r1} wrote outside their range"


@pytest.mark.parametrize("group", GROUP_SIZES)
def test_every_offered_group_size_takes_the_kernels(lib, group):
    """Each --group-size the CLI offers is in the kernels' range (decode and prompts), and the
    decode kernel computes its torch model there: a whole strip of weight rows and a partial one
    (AVX2: 8 rows a strip; AVX-512: 4-row quads and tail rows), split ranges."""
    k, n = 384, 13
    assert int4_kernel.fits(k, group, 1) and int4_kernel.fits(k, group, None)
    rng = np.random.default_rng(group)
    x = rng.standard_normal(k).astype(np.float32)
    q, s = (t.numpy() for t in quantize_int4(torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)), group))
    s = np.ascontiguousarray(s.view(np.uint16))
    y = np.full(n, np.nan, np.float32)
    for r0, r1 in ((0, 8), (8, 16)):
        lib.iree_glm_int4_matvec_workgroup(*memref(x), *memref(q), *memref(s), *memref(y), n, k, group, r0, r1)
    np.testing.assert_allclose(y, _reference(x[None], q, s.view(np.float16), group)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n,k,group", [(21, 96, 32), (40, 4224, 64), (8, 8192, 128), (13, 2048, 32)])
@pytest.mark.parametrize("m", [1, 2, 3, 5, 9, 16, 17])
def test_verify_rows_are_bit_identical_to_the_matvec_kernel(lib, m, n, k, group):
    """Speculative verification's kernel: each of m rows equals, bit for bit, the decode kernel's
    result for that row alone (odd shapes; K = 8192 takes several passes of rows)."""
    rng = np.random.default_rng(m * 7919 + n * 1000 + k)
    q, s = quantize_int4(torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)), group)
    q, s = np.ascontiguousarray(q.numpy()), np.ascontiguousarray(s.numpy())
    x = (rng.standard_normal((m, k)) * np.where(rng.random((m, k)) < 0.05, 20, 1)).astype(np.float32)
    x[:, :32] = 0  # an all-zero block
    y = np.full((m, n), np.nan, np.float32)
    for r0, r1 in [(0, 4), (4, n + 3)]:
        lib.iree_glm_int4_matvec_rows_workgroup(*memref(x), *memref(q), *memref(s), *memref(y), m, n, k, group, r0, r1)
    for r in range(m):
        one = np.full(n, np.nan, np.float32)
        lib.iree_glm_int4_matvec_workgroup(*memref(np.ascontiguousarray(x[r])), *memref(q), *memref(s), *memref(one), n, k, group, 0, n)
        assert np.array_equal(y[r].view(np.uint32), one.view(np.uint32)), f"row {r} differs from the one-row kernel"


AMX = next((s for s in X86_SETS if s.short == "amx"), None)
AVX512 = next((s for s in X86_SETS if s.short == "avx512"), None)


@pytest.fixture(scope="module")
def amx_and_avx512(tmp_path_factory):
    """The AMX set's int4 kernels and the AVX-512 set's (skipped with the reason without AMX)."""
    argtypes = {"iree_glm_int4_quantize_workgroup": (2, 5), "iree_glm_int4_matmul_workgroup": (4, 8)}
    return set_library(AMX, "int4", tmp_path_factory, argtypes), set_library(AVX512, "int4", tmp_path_factory, argtypes)


@pytest.mark.parametrize("group", GROUP_SIZES)
@pytest.mark.parametrize("m,n,groups,m_ranges", [
    (1, 16, 2, [(0, 256)]),  # one row: a tail tile alone
    (37, 21, 3, [(0, 256)]),  # 2 full 16-row tiles + 5; a partial strip; at group 32 an odd block count
    (300, 40, 18, [(0, 256), (256, 512)]),  # two calls of 256 rows, the second partial; K in 1-3 chunks
    (17, 50, 33, [(0, 7), (7, 17)]),  # split rows: tails of 7 and 10 rows; K = 1056 .. 4224 in 2-5 chunks
])
def test_amx_matrix_kernel_equals_the_avx512_sets_bit_for_bit(amx_and_avx512, m, n, groups, m_ranges, group):
    """The tile kernel's exact block sums and the AVX-512 kernel's float steps in its order: the
    same bits for every output (odd M, N and K tails, every group size the CLI offers), each
    set called with its own rows per call."""
    k = groups * group
    amx, avx512 = amx_and_avx512
    rng = np.random.default_rng(m * 31 + n * 7 + k + group)
    x = (rng.standard_normal((m, k)) * np.where(rng.random(k) < 0.05, 20, 1)).astype(np.float32)
    x[m // 2, : k // 2] = 0  # all-zero blocks: scale 0
    q, s = (np.ascontiguousarray(t.numpy()) for t in quantize_int4(torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)), group))
    n_ranges = [(0, 16), (16, n + 16)]  # whole panels of 16, the last past N
    got = _matmul(amx, x, q, s, group, n_ranges, m_ranges)
    want = _matmul(avx512, x, q, s, group, n_ranges, [(r, r + 64) for r in range(0, m, 64)])
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_amx_matrix_kernel_takes_at_most_its_rows_per_call(amx_and_avx512):
    """A range of rows longer than the set's rows per call is clamped to it (the dispatch never
    gives one: its grid's ranges are rows_per_call rows)."""
    amx, _ = amx_and_avx512
    rows = AMX.rows_per_call("int4")
    m, n, k, group = rows + 20, 16, 64, 32
    rng = np.random.default_rng(3)
    x = rng.standard_normal((m, k)).astype(np.float32)
    q, s = (np.ascontiguousarray(t.numpy()) for t in quantize_int4(torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)), group))
    y = _matmul(amx, x, q, s, group, [(0, n)], [(0, m)])
    assert not np.isnan(y[:rows]).any() and np.isnan(y[rows:]).all()
