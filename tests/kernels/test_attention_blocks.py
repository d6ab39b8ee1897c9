"""Block-sparse attention in the flash-attention kernel (kernels/x86_64_avx2/attention.c), called
directly: the pattern is a parameter of the one kernel, and its tiles never touch a key block the
pattern masks.

The kernel is built with IREE_GLM_ATTENTION_PROBE, which counts the key blocks whose mask a tile
reads and those it computes. A sparse tile must read and compute exactly the blocks holding a key
one of its rows sees (the blocks in between are neither masked nor computed); told nothing
(`local` = 0, dense) the same kernel reads every block of the same mask, so the count is what
tells the two apart. Outputs: sparse == dense kernel on the pattern's mask bit for bit, and both
match a float64 softmax of the torch model's sparse mask (`sparse_attention.sparse_mask`).
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

from iree_glm.frontend import sparse_attention as sa
from iree_glm.kernels import toolchain
from iree_glm.passes import attention_kernel
from ..helpers import MEMREF, memref

BLOCK = 64  # the kernel's key block
LOCAL, GLOBAL = 256, 16  # the pattern of the benchmarks and docs


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> ctypes.CDLL:
    reason = attention_kernel.unavailable_reason()
    if reason:
        pytest.skip(f"attention AVX2 kernel unavailable: {reason}")
    path = toolchain.build_object(tmp_path_factory.mktemp("attention_probe"), attention_kernel.SOURCE, shared=True,
                                  defines=("IREE_GLM_ATTENTION_PROBE",))
    lib = ctypes.CDLL(str(path))
    fn = getattr(lib, attention_kernel.SYMBOL)
    fn.argtypes = MEMREF * 5 + [ctypes.c_size_t] * 4 + [ctypes.c_float] + [ctypes.c_size_t] * 6
    return lib


def _counters(lib) -> tuple[ctypes.c_size_t, ctypes.c_size_t]:
    return (ctypes.c_size_t.in_dll(lib, "iree_glm_attention_blocks_read"),
            ctypes.c_size_t.in_dll(lib, "iree_glm_attention_blocks_computed"))


def _mask(start: int, s: int, n: int, local: int, global_: int) -> np.ndarray:
    """The torch model's sparse mask of positions start.. over n keys, additive [s, n]."""
    positions = torch.arange(start, start + s)[None]
    seen = sa.sparse_mask(positions, n, local, global_)[0, 0].numpy()
    return np.where(seen, 0.0, -np.inf).astype(np.float32)


def _run(lib, q, k, v, mask, group: int, local: int, global_: int) -> tuple[np.ndarray, int, int]:
    """The kernel over every (head, row tile) as the dispatch runs it: output, blocks read, computed."""
    heads, m, d = q.shape
    n, e = k.shape[1], v.shape[2]
    out = np.full((heads, m, e), np.nan, np.float32)
    read, computed = _counters(lib)
    read.value = computed.value = 0
    fn = getattr(lib, attention_kernel.SYMBOL)
    for h in range(heads):
        for r0 in range(0, m, attention_kernel.ROWS):
            fn(*memref(q), *memref(k), *memref(v), *memref(mask), *memref(out), m, n, d, e, d**-0.5, 0, group, h, r0,
               local, global_)
    return out, read.value, computed.value


def _reference(q, k, v, mask, group: int) -> np.ndarray:
    """float64 softmax(q k^T / sqrt(d) + mask) v, the mask row of position r // group."""
    rows = np.repeat(mask.astype(np.float64), group, axis=0)
    scores = q.astype(np.float64) @ k.astype(np.float64).transpose(0, 2, 1) * q.shape[2] ** -0.5 + rows
    p = np.exp(scores - scores.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v.astype(np.float64)


def _expected_blocks(start: int, s: int, n: int, group: int, local: int, global_: int, heads: int) -> int:
    """(tile, key block) pairs where a row of the tile sees a key of the block."""
    seen = np.repeat(_mask(start, s, n, local, global_) == 0, group, axis=0)  # [m, n]
    total = 0
    for r0 in range(0, seen.shape[0], attention_kernel.ROWS):
        tile = seen[r0:r0 + attention_kernel.ROWS].any(0)
        total += sum(tile[j:j + BLOCK].any() for j in range(0, n, BLOCK))
    return heads * total


CASES = [  # start, s (positions start.. over n = start + s keys), group, pattern
    (0, 2048, 2, (LOCAL, GLOBAL)),  # a whole prompt
    (1024, 256, 2, (LOCAL, GLOBAL)),  # a chunk after earlier chunks
    (1000, 129, 4, (LOCAL, GLOBAL)),  # a chunk starting and ending off the key blocks
    (0, 300, 2, (LOCAL, GLOBAL)),  # the first blocks: the window reaches the globals
    (2047, 1, 2, (LOCAL, GLOBAL)),  # decode: the query heads of one position
    (4000, 1, 8, (LOCAL, GLOBAL)),  # decode, far out
    (700, 64, 2, (64, 70)),  # globals over more than one block, window of one block
    (500, 40, 1, (1, 1)),  # each query sees the first key and itself
]


@pytest.mark.parametrize("start, s, group, pattern", CASES)
def test_sparse_tiles_compute_only_the_pattern_blocks(lib, start, s, group, pattern):
    local, global_ = pattern
    n, heads, d = start + s, 2, 64
    g = np.random.default_rng(start + s)
    q = g.standard_normal((heads, s * group, d), np.float32)
    k = g.standard_normal((heads, n, d), np.float32)
    v = g.standard_normal((heads, n, d), np.float32)
    mask = _mask(start, s, n, local, global_)
    sparse, read, computed = _run(lib, q, k, v, mask, group, local, global_)
    expected = _expected_blocks(start, s, n, group, local, global_, heads)
    assert read == computed == expected  # no block outside the pattern is read, let alone computed
    dense, dense_read, dense_computed = _run(lib, q, k, v, mask, group, 0, 0)
    tiles = heads * -(-s * group // attention_kernel.ROWS)
    assert dense_read == tiles * -(-n // BLOCK) and dense_computed == expected  # the dense form scans all
    np.testing.assert_array_equal(sparse, dense)  # the same blocks, the same arithmetic
    np.testing.assert_allclose(sparse, _reference(q, k, v, mask, group), rtol=0, atol=2e-5)


def test_the_count_sees_masked_blocks_computed(lib):
    """A causal (dense) mask under the same pattern parameter would need blocks the pattern skips:
    the count then differs, so a kernel that computed and masked them could not pass the test above."""
    start, s, group, n = 1024, 64, 2, 1088
    heads, d = 1, 64
    g = np.random.default_rng(0)
    q = g.standard_normal((heads, s * group, d), np.float32)
    k = g.standard_normal((heads, n, d), np.float32)
    v = g.standard_normal((heads, n, d), np.float32)
    causal = _mask(start, s, n, n + 1, 0)
    _, read, computed = _run(lib, q, k, v, causal, group, 0, 0)
    assert read == computed == heads * (s * group // attention_kernel.ROWS) * (n // BLOCK)
    assert computed > _expected_blocks(start, s, n, group, LOCAL, GLOBAL, heads)
