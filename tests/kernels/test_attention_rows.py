"""The exact verify's attention kernel (kernels/x86_64_avx2/attention_rows.h, in the AVX2 and
AVX-512 sets' attention.c), called directly as the pass's dispatch calls it: every row of an R-row
call (R = 1 .. exact_rows.MAX_ROWS positions, each its query heads' rows, over the keys of the
call's last position rounded up as a verify call attends them) must be bit for bit the row a
one-row call at that position computes, and close to a float64 softmax."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from iree_glm.compiler import exact_rows
from iree_glm.kernels import toolchain
from iree_glm.passes import attention_kernel
from . import attention_reference as ref

KEY_GRANULARITY = 32  # a verify call's keys: its last position + 1 rounded up (runtime's KEY_GRANULARITY)


@pytest.fixture(scope="module", params=[toolchain.X86_64_AVX2, toolchain.X86_64_AVX512], ids=lambda s: s.short)
def lib(request, tmp_path_factory) -> ctypes.CDLL:
    lib = ref.shared_library(request.param, tmp_path_factory.mktemp("attention_rows"))
    getattr(lib, attention_kernel.ROW_SYMBOL).argtypes = ref.MEMREF * 5 + [ctypes.c_size_t] * 4 + [ctypes.c_float] + [ctypes.c_size_t] * 7
    return lib


def _call(lib, q, k, v, mask, group: int, capacity: int) -> np.ndarray:
    """The kernel over every (head, workgroup) of the dispatch; K and V as the first n positions
    of a cache row of `capacity` (NaN past n: never read)."""
    heads, m, d = q.shape
    n, e = k.shape[1], v.shape[2]
    k, v = (np.concatenate([x, np.full((heads, capacity - n, x.shape[2]), np.nan, np.float32)], axis=1) for x in (k, v))
    out = np.full((heads, m, e), np.nan, np.float32)
    memref = lambda a: [a.ctypes.data, a.ctypes.data, 0, a.size, 1]  # noqa: E731
    fn = getattr(lib, attention_kernel.ROW_SYMBOL)
    for h in range(heads):
        for r0 in range(0, m, attention_kernel.ROWS):
            fn(*memref(q), *memref(k), *memref(v), *memref(mask), *memref(out), m, n, d, e, d**-0.5, 0, group, h, r0, 0, 0, capacity)
    return out


def _rounded(keys: int) -> int:
    return -(-keys // KEY_GRANULARITY) * KEY_GRANULARITY


CASES = [  # start position, group (query heads per KV head), heads, d, e
    (0, 8, 2, 64, 64),  # the 330M config's shapes, from the first position
    (29, 8, 2, 64, 64),  # rows crossing a 32-key boundary
    (250, 3, 1, 40, 24),  # odd group, head dims not multiples of 16
    (1001, 5, 2, 128, 8),  # the widest head, a narrow value
    (7, 1, 3, 8, 72),  # one query head per KV head
]


@pytest.mark.parametrize("start, group, heads, d, e", CASES)
def test_each_row_of_a_call_is_the_one_row_call(lib, start, group, heads, d, e):
    rows = exact_rows.MAX_ROWS
    g = np.random.default_rng(start + d)
    q = g.standard_normal((heads, rows * group, d), np.float32)
    n_all = _rounded(start + rows)
    k = g.standard_normal((heads, n_all, d), np.float32) * 2
    v = g.standard_normal((heads, n_all, e), np.float32)
    capacity = n_all + 64
    single = []  # row i alone: position start + i, keys rounded up from it
    for i in range(rows):
        n = _rounded(start + i + 1)
        mask = ref.pattern_mask(start + i, 1, n, 0, 0)
        qi = np.ascontiguousarray(q[:, i * group:(i + 1) * group])
        single.append(_call(lib, qi, np.ascontiguousarray(k[:, :n]), np.ascontiguousarray(v[:, :n]), mask, group, capacity))
        np.testing.assert_allclose(single[-1], ref.reference(qi, k[:, :n], v[:, :n], mask, group), atol=2e-5, rtol=0)
    for r in range(1, rows + 1):
        n = _rounded(start + r)
        mask = ref.pattern_mask(start, r, n, 0, 0)
        out = _call(lib, np.ascontiguousarray(q[:, :r * group]), np.ascontiguousarray(k[:, :n]), np.ascontiguousarray(v[:, :n]),
                    mask, group, capacity)
        for i in range(r):
            assert np.array_equal(out[:, i * group:(i + 1) * group], single[i]), f"{r}-row call, row {i}"


def test_a_row_that_sees_nothing_is_nan(lib):
    """The flash kernel's contract (0 / 0), not a made-up value."""
    q = np.ones((1, 1, 8), np.float32)
    k = np.ones((1, 4, 8), np.float32)
    mask = np.full((1, 4), -np.inf, np.float32)
    assert np.isnan(_call(lib, q, k, k, mask, 1, 8)).all()
