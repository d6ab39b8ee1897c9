"""Block-sparse attention in the x86 flash-attention kernels (kernels/attention_tile.h in the AVX2 and
AVX-512 sets' attention.c), called directly: the pattern is a parameter of the one kernel, and its tiles never touch a key block the
pattern masks.

The kernel is built with IREE_GLM_ATTENTION_PROBE, which counts the key blocks whose mask a tile
reads and those it computes (tests/kernels/attention_reference.py; the aarch64 kernel runs the
same checks under qemu). A sparse tile must read and compute exactly the blocks holding a key
one of its rows sees (the blocks in between are neither masked nor computed); told nothing
(`local` = 0, dense) the same kernel reads every block of the same mask, so the count is what
tells the two apart. Outputs: sparse == dense kernel on the pattern's mask bit for bit, and both
match a float64 softmax of the pattern's mask, the torch model's (`sparse_attention.sparse_mask`).
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

from iree_glm.frontend import sparse_attention as sa
from iree_glm.kernels import toolchain
from iree_glm.passes import attention_kernel
from . import attention_reference as ref

LOCAL, GLOBAL = 256, 16  # the pattern of the benchmarks and docs


@pytest.fixture(scope="module", params=[toolchain.X86_64_AVX2, toolchain.X86_64_AVX512], ids=lambda s: s.short)
def lib(request, tmp_path_factory) -> ctypes.CDLL:
    """The x86 forms: AVX2, and AVX-512 (16-lane tiles, its AVX2 form for up to 8 rows) where the CPU has it."""
    return ref.bind(ref.shared_library(request.param, tmp_path_factory.mktemp("attention_probe"), ("IREE_GLM_ATTENTION_PROBE",)))


def test_the_kernel_constants_are_the_pass_constants():
    assert (ref.ROWS, ref.SYMBOL) == (attention_kernel.ROWS, attention_kernel.SYMBOL)


CASES = [  # start, s (positions start.. over n = start + s keys), group, pattern
    (0, 2048, 2, (LOCAL, GLOBAL)),  # a whole prompt
    (1024, 256, 2, (LOCAL, GLOBAL)),  # a chunk after earlier chunks
    (1000, 129, 4, (LOCAL, GLOBAL)),  # a chunk starting and ending off the key blocks
    (0, 300, 2, (LOCAL, GLOBAL)),  # the first blocks: the window reaches the globals
    (2047, 1, 2, (LOCAL, GLOBAL)),  # decode: the query heads of one position
    (4000, 1, 8, (LOCAL, GLOBAL)),  # decode, far out
    (700, 64, 2, (64, 70)),  # globals over more than one block, window of one block
    (500, 40, 1, (1, 1)),  # each query sees the first key and itself
    (0, 37, 1, (0, 0)),  # causal, 37 rows: a last tile of 5 (the AVX-512 form's 8-lane path)
    (90, 75, 3, (0, 0)),  # causal, 3 query heads per KV head
]


@pytest.mark.parametrize("start, s, group, pattern", CASES)
def test_sparse_tiles_compute_only_the_pattern_blocks(lib, start, s, group, pattern):
    """Read and computed blocks are exactly the pattern's (the dense form of the same mask reads
    them all), sparse == dense bit for bit, both within 2e-5 of float64 (attention_reference)."""
    local, global_ = pattern
    n = start + s
    if local:
        torch_mask = sa.sparse_mask(torch.arange(start, start + s)[None], n, local, global_)[0, 0].numpy()
        np.testing.assert_array_equal(ref.pattern_mask(start, s, n, local, global_) == 0, torch_mask)  # the model's mask
    assert ref.check_case(lib, start, s, group, local, global_) == []


def test_the_count_sees_masked_blocks_computed(lib):
    """A causal (dense) mask under the same pattern parameter would need blocks the pattern skips:
    the count then differs, so a kernel that computed and masked them could not pass the test above."""
    start, s, group, n = 1024, 64, 2, 1088
    heads = 1
    q, k, v = ref.inputs(start, s, group, heads, 64, 64, 0)
    causal = ref.pattern_mask(start, s, n, 0, 0)
    _, read, computed = ref.run(lib, q, k, v, causal, group, 0, 0)
    assert read == computed == heads * (s * group // ref.ROWS) * (n // ref.BLOCK)
    assert computed > ref.expected_blocks(ref.pattern_mask(start, s, n, LOCAL, GLOBAL), group, heads)


@pytest.mark.parametrize("start, s, group, pattern", [(1024, 256, 2, (LOCAL, GLOBAL)), (90, 75, 3, (0, 0))])
def test_keys_read_in_place_of_a_cache_row(lib, start, s, group, pattern):
    """A prompt's K and V as the first n positions of a longer cache row (the kernel told the
    row's stride, passes/attention_kernel.py): the same bits as from their own tensors, and
    the positions past n (NaN here) never read."""
    n = start + s
    q, k, v = ref.inputs(start, s, group, 2, 64, 64, 3)
    mask = ref.pattern_mask(start, s, n, *pattern)
    own = ref.run(lib, q, k, v, mask, group, *pattern)
    in_place = ref.run(lib, q, k, v, mask, group, *pattern, capacity=n + 300)
    assert np.array_equal(in_place[0], own[0]) and in_place[1:] == own[1:]
