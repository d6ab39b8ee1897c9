"""The flash-attention kernel as an exact `verify` calls it (kernels/attention_tile.h, in every
x86 set's attention.c), called directly as the pass's dispatch calls it: every row of an R-row
call (R = 1 .. exact_rows.MAX_ROWS positions, each its query heads' rows, over the keys of the
call's last position rounded up as a verify call attends them) must be bit for bit the row a
one-row call at that position computes, and close to a float64 softmax
(attention_reference.check_rows_case; the aarch64 set's kernel runs the same check under qemu,
aarch64_kernels_check.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from iree_glm.bundle import kv_layout
from iree_glm.compiler import exact_rows
from iree_glm.kernels import toolchain
from iree_glm.passes import attention_kernel
from . import attention_reference as ref


@pytest.fixture(scope="module", params=[toolchain.X86_64_AVX2, toolchain.X86_64_AVX512], ids=lambda s: s.short)
def lib(request, tmp_path_factory):
    return ref.bind(ref.shared_library(request.param, tmp_path_factory.mktemp("attention_rows")))


def test_the_check_covers_what_a_build_uses():
    """The shared check's constants (numpy only, for the arm64 Python) are the build's and the runtime's."""
    assert (ref.VERIFY_ROWS, ref.SYMBOL, ref.ROWS, ref.KEY_GRANULARITY) == (
        exact_rows.MAX_ROWS, attention_kernel.SYMBOL, attention_kernel.ROWS, kv_layout.KEY_GRANULARITY)


@pytest.mark.parametrize("start, group, heads, d, e", ref.ROWS_CASES)
def test_each_row_of_a_call_is_the_one_row_call(lib, start, group, heads, d, e):
    problems = ref.check_rows_case(lib, start, group, heads, d, e)
    assert not problems, "\n".join(problems)


def test_a_row_that_sees_nothing_is_nan(lib):
    """The flash kernel's contract (0 / 0), not a made-up value."""
    q = np.ones((1, 1, 8), np.float32)
    k = np.ones((1, 4, 8), np.float32)
    mask = np.full((1, 4), -np.inf, np.float32)
    assert np.isnan(ref.run_rows(lib, q, k, k, mask, 1, 8)).all()
