"""The int8 kernels of every x86-64 kernel set (kernels/x86_64_avx2/int8.c, and
x86_64_avx512/int8.c's vpdpbusd matrix kernel where the CPU has AVX-512 VNNI; skipped with the
reason elsewhere) called directly on shapes that exercise their tiling: several tiles and blocks,
K not a multiple of the 8-k step's blocks of 128 bytes, tile ranges past N, partial tile groups
and row tiles, outliers and all-zero blocks of x.

The C file is compiled as a shared library with the flags IREE's object gets and called through
ctypes with the memref arguments the dispatches pass (base, aligned base, offset, size, stride).
The reference is torch's model of the kernels (quant.quantize_activations on x for the
matrix-vector kernel, quant.quantize_rows for the matrix kernel; integer weights).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iree_glm.kernels import int8 as int8_kernel
from iree_glm.transforms.quantize import quantize_activations, quantize_int8, quantize_rows

from ..helpers import memref, set_library, x86_kernel_sets


X86_SETS = x86_kernel_sets()


@pytest.fixture(scope="module", params=X86_SETS, ids=lambda s: s.short)
def lib(request, tmp_path_factory):
    """Each x86-64 kernel set's int8 kernels (the same entry points and layouts)."""
    lib = set_library(request.param, "int8", tmp_path_factory,
                      {"iree_glm_int8_matvec_workgroup": (3, 4), "iree_glm_int8_quantize_workgroup": (2, 4),
                       "iree_glm_int8_matmul_workgroup": (3, 7), "iree_glm_int8_matvec_rows_workgroup": (3, 5)})
    lib.kernel_set = request.param
    return lib


def _x(rng, k: int) -> np.ndarray:
    x = (rng.standard_normal(k) * np.where(rng.random(k) < 0.05, 20, 1)).astype(np.float32)  # a few outliers
    x[: min(k, 64)] = 0  # all-zero blocks: scale 0
    return x


@pytest.mark.parametrize("n,k,ranges", [
    (48, 96, [(0, 1), (1, 3)]),  # 3 tiles over two workgroups; K = 3 blocks
    (20, 2816, [(0, 1), (1, 5)]),  # N padded to 32 (a zero tile row); the range runs past the tiles
    (16, 32, [(0, 1)]),  # one block
])
def test_matvec_kernel_matches_its_torch_model(lib, n, k, ranges):
    rng = np.random.default_rng(n * 1000 + k)
    q, _ = quantize_int8(torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)))
    q = np.ascontiguousarray(q.numpy())  # [N/16, K, 16]
    tiles = q.shape[0]
    x = _x(rng, k)
    y = np.full(tiles * 16, np.nan, np.float32)
    for t0, t1 in ranges:
        lib.iree_glm_int8_matvec_workgroup(*memref(x), *memref(q), *memref(y), tiles, k, t0, t1)
    w = q.astype(np.float64).transpose(1, 0, 2).reshape(k, tiles * 16)
    want = quantize_activations(torch.from_numpy(x), 32).double().numpy() @ w
    assert not np.isnan(y).any()  # every output written
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_matvec_extremes_do_not_saturate(lib):
    """Weights and x at +-127 (the i16 pair sums of vpmaddubsw at their largest) stay exact."""
    k, tiles = 256, 2
    q = np.where(np.arange(tiles * k * 16).reshape(tiles, k, 16) % 3 == 0, -127, 127).astype(np.int8)
    x = np.where(np.arange(k) % 2 == 0, 1.0, -1.0).astype(np.float32)  # quantizes to +-127
    y = np.zeros(tiles * 16, np.float32)
    lib.iree_glm_int8_matvec_workgroup(*memref(x), *memref(q), *memref(y), tiles, k, 0, tiles)
    want = x.astype(np.float64) @ q.astype(np.float64).transpose(1, 0, 2).reshape(k, tiles * 16)
    np.testing.assert_allclose(y, want, rtol=1e-6)


def test_workgroup_writes_only_its_tiles(lib):
    k, tiles = 64, 4
    q = np.ones((tiles, k, 16), np.int8)
    x = np.ones(k, np.float32)
    y = np.full(tiles * 16, -1.0, np.float32)
    lib.iree_glm_int8_matvec_workgroup(*memref(x), *memref(q), *memref(y), tiles, k, 1, 3)
    assert (y[:16] == -1).all() and (y[48:] == -1).all() and np.allclose(y[16:48], k)


def _matmul(lib, x: np.ndarray, q: np.ndarray, tile_ranges, m_ranges, rows_out: list | None = None) -> np.ndarray:
    """The two dispatches' work, one call per workgroup: quantize rows, then the matrix kernel
    (with `rows_out`, the quantized rows of x are appended to it)."""
    m, k = x.shape
    tiles = q.shape[0]
    row = int8_kernel.xq_row_bytes(k)
    xq = np.zeros(m * row + 64, np.int8)
    off = (-xq.ctypes.data) % 32  # IREE's buffers are aligned
    xq = xq[off: off + m * row]
    for r0 in range(0, m, int8_kernel.QUANT_ROWS):
        lib.iree_glm_int8_quantize_workgroup(*memref(x), *memref(xq), m, k, r0, r0 + int8_kernel.QUANT_ROWS)
    y = np.full((m, tiles * 16), np.nan, np.float32)
    for t0, t1 in tile_ranges:
        for m0, m1 in m_ranges:
            lib.iree_glm_int8_matmul_workgroup(*memref(xq), *memref(q), *memref(y), m, tiles, k, t0, t1, m0, m1)
    if rows_out is not None:
        rows_out.append(xq.reshape(m, row).copy())
    return y


@pytest.mark.parametrize("m,n,k,tile_ranges,m_ranges", [
    (13, 40, 96, [(0, 2), (2, 4)], [(0, 64)]),  # odd M (a last single row); the tile range past N
    (7, 48, 2816, [(0, 3)], [(0, 3), (3, 7)]),  # K = 11 chunks of 256; M split unevenly
    (70, 16, 544, [(0, 1)], [(0, 64), (64, 128)]),  # K = 2 chunks + a partial one; two row ranges, the second partial
    (1, 32, 32, [(0, 1), (1, 2)], [(0, 64)]),  # one row, one block
    (20, 112, 288, [(0, 7)], [(0, 64)]),  # 7 tiles: a group of 4 and one of 3; 20 rows: 3 tiles of 6 and 2
])
def test_matrix_kernel_matches_its_torch_model(lib, m, n, k, tile_ranges, m_ranges):
    rng = np.random.default_rng(m * 1000 + k)
    q, _ = quantize_int8(torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)))
    q = np.ascontiguousarray(q.numpy())
    x = (rng.standard_normal((m, k)) * np.where(rng.random(k) < 0.05, 20, 1)).astype(np.float32)
    x[m // 2] = 0  # an all-zero row: scale 0
    got = _matmul(lib, x, q, tile_ranges, m_ranges)
    qx, scale = quantize_rows(torch.from_numpy(x))
    w = torch.from_numpy(q).double().permute(1, 0, 2).reshape(k, -1)
    want = ((qx.double() @ w) * scale.double()).numpy()
    assert not np.isnan(got).any()  # every output written
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_matrix_kernel_extremes_do_not_saturate(lib):
    k, tiles, m = 512, 1, 3
    q = np.where(np.arange(tiles * k * 16).reshape(tiles, k, 16) % 5 == 0, -127, 127).astype(np.int8)
    x = np.tile(np.where(np.arange(k) % 2 == 0, 1.0, -1.0).astype(np.float32), (m, 1))
    got = _matmul(lib, x, q, [(0, 1)], [(0, 64)])
    want = x.astype(np.float64) @ q.astype(np.float64).transpose(1, 0, 2).reshape(k, 16)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def _exact_reference(rows: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """y from the kernel's own quantized rows of x: exact integer sums (int64) times the row
    scale in f32, the rounding every set's kernel does."""
    xs = rows[:, :k].reshape(len(rows), k // 8, 2, 4).transpose(0, 1, 3, 2).reshape(len(rows), k)  # undo even_odd
    scale = rows[:, k: k + 4].copy().view(np.float32)  # [m, 1]
    sums = xs.astype(np.int64) @ q.astype(np.int64).transpose(1, 0, 2).reshape(k, -1)
    return sums.astype(np.float32) * scale


@pytest.mark.parametrize("m", [1, 3, 17, 64])
@pytest.mark.parametrize("n,k", [(16, 32), (32, 64), (48, 96), (80, 1056)])
def test_matrix_kernel_is_exact(lib, m, n, k):
    """Every set's matrix kernel gives the integer reference's numbers bit for bit: M not a
    multiple of 16 (the AMX set's partial tiles), odd tile counts, K = 64 j + 32 (its K tail)."""
    rng = np.random.default_rng(m * 7919 + n * 31 + k)
    q = rng.integers(-127, 128, (n // 16, k, 16), dtype=np.int8)
    x = rng.standard_normal((m, k)).astype(np.float32)
    rows = []
    got = _matmul(lib, x, q, [(0, n // 16)], [(0, 64)], rows)
    np.testing.assert_array_equal(got, _exact_reference(rows[0], q, k))


def test_matrix_kernel_takes_the_rows_its_dispatch_gives(lib):
    """Calls of the set's rows per call (the dispatch grid's ranges: 256 for the AMX set) write
    every output, and a range past that limit is clamped to it."""
    chunk = lib.kernel_set.rows_per_call("int8")
    m, k, n = 2 * chunk + 44, 96, 48
    rng = np.random.default_rng(chunk)
    q = rng.integers(-127, 128, (n // 16, k, 16), dtype=np.int8)
    x = rng.standard_normal((m, k)).astype(np.float32)
    rows = []
    got = _matmul(lib, x, q, [(0, n // 16)], [(r, r + chunk) for r in range(0, m, chunk)], rows)
    np.testing.assert_array_equal(got, _exact_reference(rows[0], q, k))
    clamped = _matmul(lib, x, q, [(0, n // 16)], [(0, m)])
    assert not np.isnan(clamped[:chunk]).any() and np.isnan(clamped[chunk:]).all()


def test_matrix_kernel_extremes_are_exact(lib):
    """x and w at +-127 in every product (the largest sums) over 17 rows and 3 tiles."""
    k, tiles, m = 1056, 3, 17
    q = np.where(np.arange(tiles * k * 16).reshape(tiles, k, 16) % 7 < 4, -127, 127).astype(np.int8)
    x = np.where((np.arange(m * k).reshape(m, k) // 3) % 2 == 0, 1.0, -1.0).astype(np.float32)
    rows = []
    got = _matmul(lib, x, q, [(0, tiles)], [(0, 64)], rows)
    assert np.abs(rows[0][:, :k]).min() == 127
    np.testing.assert_array_equal(got, _exact_reference(rows[0], q, k))


@pytest.mark.parametrize("kernel_set", X86_SETS, ids=lambda s: s.short)
def test_python_constants_match_the_c_source(kernel_set):
    """int8_kernel.py sizes the dispatches by the C kernels' limits: they must agree (a set's
    file after the files of the sets it includes, down to the AVX2 one)."""
    import re

    chain, level = [], kernel_set
    while level is not None:
        chain.insert(0, level.source("int8"))
        level = level.base
    source = "".join(dict.fromkeys(p.read_text() for p in chain))
    values = {}
    for body in re.findall(r"enum \{([^}]*)\}", source):
        for item in body.split(","):
            name, value = (t.strip() for t in item.split("="))
            values[name] = int(value)
    assert values["BLOCK"] == int8_kernel.BLOCK and values["MAX_K"] == int8_kernel.MAX_K and values["LANES"] == int8_kernel.LANES
    rows = values["AMX_MAX_ROWS"] if "IREE_GLM_MATMUL_MAX_ROWS AMX_MAX_ROWS" in source else values["MAX_ROWS"]
    assert rows == kernel_set.rows_per_call("int8")
    assert "static inline size_t xq_row_bytes(size_t k) { return k + 32; }" in source and int8_kernel.xq_row_bytes(64) == 96


@pytest.mark.parametrize("n,k", [(48, 96), (20, 2816), (16, 32), (64, 16384)])
@pytest.mark.parametrize("m", [1, 2, 3, 5, 9, 16, 17])
def test_verify_rows_are_bit_identical_to_the_matvec_kernel(lib, m, n, k):
    """Speculative verification's kernel: each of m rows equals, bit for bit, the decode kernel's
    result for that row alone (odd shapes; K = 16384 takes several passes of rows)."""
    rng = np.random.default_rng(m * 7919 + n * 1000 + k)
    q, _ = quantize_int8(torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)))
    q = np.ascontiguousarray(q.numpy())
    tiles = q.shape[0]
    x = np.stack([_x(rng, k) for _ in range(m)])
    y = np.full((m, tiles * 16), np.nan, np.float32)
    for t0, t1 in [(0, 1), (1, tiles + 2)]:
        lib.iree_glm_int8_matvec_rows_workgroup(*memref(x), *memref(q), *memref(y), m, tiles, k, t0, t1)
    for r in range(m):
        one = np.full(tiles * 16, np.nan, np.float32)
        lib.iree_glm_int8_matvec_workgroup(*memref(np.ascontiguousarray(x[r])), *memref(q), *memref(one), tiles, k, 0, tiles)
        assert np.array_equal(y[r].view(np.uint32), one.view(np.uint32)), f"row {r} differs from the one-row kernel"
