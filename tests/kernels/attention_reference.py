"""The flash-attention kernel (kernels/attention_tile.h) called through ctypes, and its float64
reference: shared by the x86 test (test_attention_blocks.py) and the aarch64 check that runs
under qemu (aarch64_kernels_check.py), where there is no torch, hence numpy only.

The kernel is built with IREE_GLM_ATTENTION_PROBE, which counts the key blocks whose mask a tile
reads and those it computes (two exported globals)."""

from __future__ import annotations

import ctypes

import numpy as np

SYMBOL = "iree_glm_attention_workgroup"
ROWS, BLOCK = 32, 64  # the kernel's query rows per call and key block (attention_layout.h)
MEMREF = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]


def _memref(a: np.ndarray) -> list:
    return [a.ctypes.data, a.ctypes.data, 0, a.size, 1]


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Give the library's kernel its C argument types."""
    getattr(lib, SYMBOL).argtypes = MEMREF * 5 + [ctypes.c_size_t] * 4 + [ctypes.c_float] + [ctypes.c_size_t] * 7
    return lib


def shared_library(kernel_set, folder, defines: tuple[str, ...] = ()) -> ctypes.CDLL:
    """An x86 set's attention kernels as a shared library (the test is skipped where it cannot be built)."""
    import pytest

    from iree_glm.kernels import toolchain

    reason = toolchain.unavailable_reason(kernel_set)
    if reason:
        pytest.skip(f"attention {kernel_set.short} kernel unavailable: {reason}")
    return ctypes.CDLL(str(toolchain.build_object(folder, kernel_set.source("attention"), kernel_set, shared=True, defines=defines)))


def pattern_mask(start: int, s: int, n: int, local: int, global_: int) -> np.ndarray:
    """Additive mask [s, n] of positions start.. over n keys: position p sees k <= p with k < global_
    or k > p - local (local = 0: every k <= p, causal)."""
    p = np.arange(start, start + s)[:, None]
    j = np.arange(n)[None]
    seen = (j <= p) & ((j < global_) | (j > p - local)) if local else j <= p
    return np.where(seen, 0.0, -np.inf).astype(np.float32)


def run(lib, q, k, v, mask, group: int, local: int, global_: int, capacity: int = 0) -> tuple[np.ndarray, int, int]:
    """The kernel over every (head, row tile) as the dispatch runs it: output, blocks read, computed
    (the library built with IREE_GLM_ATTENTION_PROBE). `capacity` > n: as `run_rows`."""
    read = ctypes.c_size_t.in_dll(lib, "iree_glm_attention_blocks_read")
    computed = ctypes.c_size_t.in_dll(lib, "iree_glm_attention_blocks_computed")
    read.value = computed.value = 0
    out = run_rows(lib, q, k, v, mask, group, capacity, local, global_)
    return out, read.value, computed.value


def run_rows(lib, q, k, v, mask, group: int, capacity: int = 0, local: int = 0, global_: int = 0) -> np.ndarray:
    """The kernel over every (head, row tile) as the dispatch runs it. `capacity` > n: K and V as the
    first n positions of a cache row of `capacity` (NaN past n, which must never be read), the
    kernel told that stride, as a decode or verify call reads the cache in place."""
    heads, m, d = q.shape
    n, e = k.shape[1], v.shape[2]
    if capacity:
        k, v = (np.concatenate([x, np.full((heads, capacity - n, x.shape[2]), np.nan, np.float32)], axis=1) for x in (k, v))
    out = np.full((heads, m, e), np.nan, np.float32)
    fn = getattr(lib, SYMBOL)
    for h in range(heads):
        for r0 in range(0, m, ROWS):
            fn(*_memref(q), *_memref(k), *_memref(v), *_memref(mask), *_memref(out), m, n, d, e, d**-0.5, 0, group, h, r0,
               local, global_, k.shape[1])  # k's positions per head: n, or the capacity
    return out


def reference(q, k, v, mask, group: int) -> np.ndarray:
    """float64 softmax(q k^T / sqrt(d) + mask) v, the mask row of position r // group."""
    rows = np.repeat(mask.astype(np.float64), group, axis=0)
    scores = q.astype(np.float64) @ k.astype(np.float64).transpose(0, 2, 1) * q.shape[2] ** -0.5 + rows
    p = np.exp(scores - scores.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v.astype(np.float64)


def expected_blocks(mask: np.ndarray, group: int, heads: int) -> int:
    """(tile, key block) pairs where a row of the tile sees a key of the block."""
    seen = np.repeat(mask == 0, group, axis=0)  # [m, n]
    total = 0
    for r0 in range(0, seen.shape[0], ROWS):
        tile = seen[r0:r0 + ROWS].any(0)
        total += sum(tile[j:j + BLOCK].any() for j in range(0, seen.shape[1], BLOCK))
    return heads * total


def inputs(start: int, s: int, group: int, heads: int, d: int, e: int, seed: int) -> tuple[np.ndarray, ...]:
    """q [heads, s * group, d], k [heads, n, d], v [heads, n, e] (n = start + s), standard normal."""
    g = np.random.default_rng(seed)
    n = start + s
    return (g.standard_normal((heads, s * group, d), np.float32), g.standard_normal((heads, n, d), np.float32),
            g.standard_normal((heads, n, e), np.float32))


def check_case(lib, start: int, s: int, group: int, local: int, global_: int, heads: int = 2, d: int = 64, e: int = 64,
               atol: float = 2e-5) -> list[str]:
    """One case, sparse (told the pattern) and dense (told nothing) over the pattern's mask (local =
    0: causal, both runs dense): what is wrong, empty if nothing. The sparse form reads and computes exactly the blocks holding a key one
    of a tile's rows sees; the dense form reads every block and computes the same ones; both give
    the same bits, within `atol` of the float64 reference."""
    n = start + s
    q, k, v = inputs(start, s, group, heads, d, e, start + s + d)
    mask = pattern_mask(start, s, n, local, global_)
    expected = expected_blocks(mask, group, heads)
    every = heads * -(-s * group // ROWS) * -(-n // BLOCK)  # (tile, block) pairs
    problems = []
    sparse, read, computed = run(lib, q, k, v, mask, group, local, global_)
    if (read, computed) != (expected if local else every, expected):  # local = 0: the causal mask, told as dense
        problems.append(f"sparse blocks read {read} computed {computed}, expected {expected}")
    dense, dense_read, dense_computed = run(lib, q, k, v, mask, group, 0, 0)
    if (dense_read, dense_computed) != (every, expected):
        problems.append(f"dense blocks read {dense_read} computed {dense_computed}, expected {every} / {expected}")
    if not np.array_equal(sparse, dense):
        problems.append("sparse != dense")
    err = float(np.abs(sparse - reference(q, k, v, mask, group)).max())
    if not err <= atol:
        problems.append(f"max error {err:.3g} > {atol}")
    return problems


# --- rows that do not depend on the call: an exact verify's -----------------------------------

KEY_GRANULARITY = 32  # a verify call's keys: its last position + 1 rounded up (bundle/kv_layout.py's)
VERIFY_ROWS = 9  # compiler/exact_rows.MAX_ROWS (positions of a verify call at most)
ROWS_CASES = [  # start position, group (query heads per KV head), heads, d, e
    (0, 8, 2, 64, 64),  # the 330M config's shapes, from the first position
    (29, 8, 2, 64, 64),  # rows crossing a 32-key boundary
    (250, 3, 1, 40, 24),  # odd group, head dims not multiples of 16
    (1001, 5, 2, 128, 8),  # the widest head, a narrow value
    (7, 1, 3, 8, 72),  # one query head per KV head
    (62, 16, 1, 64, 64),  # 16 query heads per KV head: a position's rows fill vectors of every width
]


def _rounded(keys: int) -> int:
    return -(-keys // KEY_GRANULARITY) * KEY_GRANULARITY


def check_rows_case(lib, start: int, group: int, heads: int, d: int, e: int) -> list[str]:
    """Every row of an R-row call (R = 1 .. VERIFY_ROWS positions, each its query heads' rows,
    over the keys of the call's last position rounded up, as a verify call attends them) is bit
    for bit the row a one-row call at that position computes, and close to a float64 softmax.
    Returns the problems found (empty: none)."""
    rows, problems = VERIFY_ROWS, []
    g = np.random.default_rng(start + d)
    q = g.standard_normal((heads, rows * group, d), np.float32)
    n_all = _rounded(start + rows)
    k = g.standard_normal((heads, n_all, d), np.float32) * 2
    v = g.standard_normal((heads, n_all, e), np.float32)
    capacity = n_all + 64
    single = []  # row i alone: position start + i, keys rounded up from it
    for i in range(rows):
        n = _rounded(start + i + 1)
        mask = pattern_mask(start + i, 1, n, 0, 0)
        qi = np.ascontiguousarray(q[:, i * group:(i + 1) * group])
        single.append(run_rows(lib, qi, np.ascontiguousarray(k[:, :n]), np.ascontiguousarray(v[:, :n]), mask, group, capacity))
        err = float(np.abs(single[-1] - reference(qi, k[:, :n], v[:, :n], mask, group)).max())
        if not err <= 2e-5:
            problems.append(f"row {i} alone: max error {err:.3g} against float64")
    for r in range(1, rows + 1):
        n = _rounded(start + r)
        mask = pattern_mask(start, r, n, 0, 0)
        out = run_rows(lib, np.ascontiguousarray(q[:, :r * group]), np.ascontiguousarray(k[:, :n]), np.ascontiguousarray(v[:, :n]),
                       mask, group, capacity)
        problems += [f"{r}-row call, row {i} differs from the one-row call" for i in range(r)
                     if not np.array_equal(out[:, i * group:(i + 1) * group], single[i])]
    return problems
