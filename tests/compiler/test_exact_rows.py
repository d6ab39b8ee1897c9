"""compiler/exact_rows.py reads the row tiles IREE chose from dumped executable configurations."""

from iree_glm.compiler import exact_rows

EXPORT = "    hal.executable.export public @{fn}$async_dispatch_{n}_{kind}_{dims}_{types} ordinal(0) layout(#hal.pipeline.layout<>)\n"
CONFIG = "      %1 = linalg.generic {{lowering_config = #iree_cpu.lowering_config<{config}>}}\n"


def _dispatch(folder, fn: str, n: int, kind: str, dims: str, *configs: str, types: str = "f32") -> None:
    text = EXPORT.format(fn=fn, n=n, kind=kind, dims=dims, types=types) + "".join(CONFIG.format(config=c) for c in configs)
    (folder / f"configured_module_{fn}$async_dispatch_{n}.mlir").write_text(text)


def test_the_smallest_tile_of_a_dynamic_dimension_bounds_the_rows(tmp_path):
    # The rows of a norm in vector tiles of 8 (its 1-d result op too); a static dimension's 16 and
    # an elementwise op's row tile of 1 (row by row) do not count.
    _dispatch(tmp_path, "verify", 24, "reduction", "Dx1024", "distribution = [32, 0], vector_common_parallel = [8, 0], vector_reduction = [0, 16]",
              "vector_common_parallel = [8]")
    _dispatch(tmp_path, "prefill", 25, "elementwise", "Dx5632", "distribution = [256, 16], vector_common_parallel = [1, 16]")
    # A decode step's dynamic dimension is the attended keys (one static row): not verify's code.
    _dispatch(tmp_path, "decode", 14, "matmul_like", "Dx2x8x64", "vector_common_parallel = [1, 2, 2]")
    assert exact_rows.smallest_dynamic_tile(tmp_path) == 8
    assert exact_rows.exact_rows(tmp_path, cap=9) == 7
    assert exact_rows.exact_rows(tmp_path, cap=5) == 5
    # verify is the module's first function: a dispatch named after prefill is prefill's alone
    # (its norms' 4-row tiles on AVX2-only targets) ...
    _dispatch(tmp_path, "prefill", 27, "reduction", "Dx1024", "vector_common_parallel = [4, 0], vector_reduction = [0, 8]")
    assert exact_rows.exact_rows(tmp_path, cap=9) == 7
    # ... one named after verify is verify's.
    _dispatch(tmp_path, "verify", 28, "reduction", "Dx1024", "vector_common_parallel = [4, 0], vector_reduction = [0, 8]")
    assert exact_rows.exact_rows(tmp_path, cap=9) == 3


def test_no_tiled_rows_means_the_cap_and_a_tile_of_two_means_none(tmp_path):
    _dispatch(tmp_path, "verify", 3, "elementwise", "Dx64", "vector_common_parallel = [1, 16]")
    assert exact_rows.smallest_dynamic_tile(tmp_path) is None
    assert exact_rows.exact_rows(tmp_path, cap=9) == 9
    _dispatch(tmp_path, "verify", 4, "reduction", "Dx64", "vector_common_parallel = [2, 0]")
    assert exact_rows.exact_rows(tmp_path, cap=9) is None


def test_without_dispatches_named_after_verify_every_function_counts(tmp_path):
    """Were verify's dispatches all named after another function (the naming changed), prefill's
    and embed's would count, as before verify was exported first."""
    _dispatch(tmp_path, "prefill", 3, "elementwise", "Dx64", "vector_common_parallel = [8, 16]")
    _dispatch(tmp_path, "embed", 4, "reduction", "Dx64", "vector_common_parallel = [4, 0]")
    _dispatch(tmp_path, "decode", 5, "reduction", "Dx64", "vector_common_parallel = [2, 0]")
    assert exact_rows.exact_rows(tmp_path, cap=9) == 3


def test_integer_dispatches_do_not_count(tmp_path):
    """The positions' i64 broadcasts tile rows by 2 on aarch64 (two i64 per 128-bit vector);
    integer results cannot depend on the tiles, so only the float dispatches bound the rows. A
    dispatch with one float type among integers (a mask from positions) still counts. (All named
    after prefill, with no verify dispatch: every function counts.)"""
    _dispatch(tmp_path, "prefill", 14, "elementwise_broadcast", "D", "distribution = [4096], vector_common_parallel = [2]", types="i64")
    _dispatch(tmp_path, "prefill", 16, "elementwise_broadcast", "2xD", "vector_common_parallel = [1, 2]", types="i64xi8")
    _dispatch(tmp_path, "prefill", 22, "reduction", "Dx64", "distribution = [32, 0], vector_common_parallel = [4, 0]")
    assert exact_rows.exact_rows(tmp_path, cap=9) == 3
    _dispatch(tmp_path, "prefill", 19, "elementwise_broadcast", "DxD", "vector_common_parallel = [1, 2]", types="i64xi64xf32")
    assert exact_rows.exact_rows(tmp_path, cap=9) is None
