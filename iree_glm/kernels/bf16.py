"""The bf16 kernels: linear layers of `--compute-dtype bf16` bundles on AMX-BF16 + AVX-512 BF16.

IREE's bf16 demotion (compiler/compute_dtype.py) multiplies on `vdpbf16ps` through its mmt4d
loop and repacks f32 weights to bf16 at load. On CPUs with AMX-BF16 the pass
(passes/dequant_matmul.py) instead calls `kernels/x86_64_amx/bf16.c` on weights stored bf16 in
the archive in its tile layout (transforms/quantize.py's `pack_bf16`: half the archive, no load
repack), with f32 x rounded to bf16 (nearest even, as IREE's demotion) and f32 sums:
- prompts (M != 1): a dispatch converting x's rows once, then the tile kernel (`tdpbf16ps`) on
  a grid of weight-tile ranges x ranges of rows (KernelSet.rows_per_call);
- decode (M = 1) and `verify` (a few rows, each as decode computes it): a matrix-vector kernel
  on `vdpbf16ps` (it streams half the bytes of f32 weights).

The object is the AMX set's (kernels/toolchain.py), built and linked like the int8 kernels'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from iree_glm.kernels import toolchain
from iree_glm.kernels.static_executable import MATMUL_RANGES, Binding, Ceildiv, KernelDispatch, quantize_dispatch, quantize_executable

FEATURES = ("avx512bf16", "amx-bf16")  # besides the set's: what the bf16 code runs on
CONVERT_SYMBOL = "iree_glm_bf16_convert_workgroup"  # rows of x -> bf16 rows (prompts)
MATVEC_SYMBOL = "iree_glm_bf16_matvec_workgroup"  # rows of x, each alone (decode, verify)
MATMUL_SYMBOL = "iree_glm_bf16_matmul_workgroup"  # converted rows x a range of weight tiles
LANES = 16  # output rows per weight tile
MAX_K = 16384  # the matrix-vector kernel keeps x's bf16 row on the stack
WORKGROUPS = 16  # matrix-vector kernel: tile ranges per dispatch
N_CHUNKS = 8  # matrix kernel: weight-tile ranges per dispatch, times ranges of the set's rows per call (BF16_MAX_ROWS in x86_64_amx/bf16_tiles.h)


def build_object(folder: Path, kernel_set: toolchain.KernelSet = toolchain.X86_64_AMX) -> toolchain.KernelObject:
    """The bf16 kernels of `kernel_set` as an object in `folder` (raises KernelUnavailable)."""
    return toolchain.build_kernel(folder, "bf16", kernel_set)


def layout(d_shape: list[int]) -> Optional[tuple[int, int]]:
    """(tiles, K) of a stored bf16 weight [tiles, K2, 16, 2] the kernels read, else None."""
    if len(d_shape) != 4 or d_shape[2] != LANES or d_shape[3] != 2 or 2 * d_shape[1] > MAX_K:
        return None
    return d_shape[0], 2 * d_shape[1]


def xb_row_bytes(k: int) -> int:
    """Bytes of one converted row of x (the C file's xb_row_bytes): K bf16 padded to 32 k."""
    return 2 * (-(-k // 32) * 32)


def _weight(k: int, tiles: int) -> tuple[str, str, int]:
    """The weight's tensor type, its flat type and element count."""
    wn = tiles * k * LANES
    return f"tensor<{tiles}x{k // 2}x{LANES}x2xbf16>", f"tensor<{wn}xbf16>", wn


def _name(kind: str, k: int, n: int, m: Optional[int]) -> str:
    return f"iree_glm_bf16_{kind}_{k}x{n}_m{'dyn' if m is None else m}"


def matvec_name(k: int, n: int, m: Optional[int]) -> str:
    return _name("matvec", k, n, m)


def matmul_name(k: int, n: int, m: Optional[int]) -> str:
    return _name("matmul", k, n, m)


def matvec_definitions(k: int, tiles: int, obj: toolchain.KernelObject, m: Optional[int]) -> str:
    """MLIR text: x [M, K] f32 (M static or None) times the bf16 weight -> [M, N] f32 in one
    dispatch of WORKGROUPS tile ranges, each row as a one-row call computes it."""
    n, name = tiles * LANES, matvec_name(k, tiles * LANES, m)
    wt, flat, wn = _weight(k, tiles)
    per = -(-tiles // WORKGROUPS)
    mt, dims = ("?", "{%m}") if m is None else (str(m), "")
    get_m = f"%m = tensor.dim %x, %c0 : tensor<?x{k}xf32>" if m is None else f"%m = arith.constant {m} : index"
    dispatch = KernelDispatch(
        name=name, symbol=MATVEC_SYMBOL, grid=(-(-tiles // per),),
        bindings=(Binding("x", "f32", "%xn"), Binding("w", "bf16", "%wn"), Binding("y", "f32", "%yn")),
        constants={"k": k, "n": n, "tiles": tiles, "wn": wn, "per": per},
        lines=("%xn = arith.muli %m, %k : index", "%yn = arith.muli %m, %n : index",
               "%t0 = arith.muli %wx, %per : index", "%t1 = arith.addi %t0, %per : index"),
        args=("%m", "%tiles", "%k", "%t0", "%t1"), operands=("%m",))
    return f"""
{dispatch.text(obj)}
util.func private @{name}(%x: tensor<{mt}x{k}xf32>, %w: {wt}) -> tensor<{mt}x{n}xf32> {{
  %c0 = arith.constant 0 : index
  {get_m}
  %wf = tensor.collapse_shape %w [[0, 1, 2, 3]] : {wt} into {flat}
  %y = flow.dispatch @{name}_exe::@{name}(%x, %wf, %m) : (tensor<{mt}x{k}xf32>{dims}, {flat}, index) -> tensor<{mt}x{n}xf32>{dims}
  util.return %y : tensor<{mt}x{n}xf32>
}}
"""


def matmul_definitions(k: int, tiles: int, obj: toolchain.KernelObject, m: Optional[int]) -> str:
    """MLIR text: two dispatches for M rows of x (static or None): x's rows converted to bf16
    once, then the tile kernel on a grid of N_CHUNKS weight-tile ranges x ceil(M / rows per call)."""
    n, name, cname = tiles * LANES, matmul_name(k, tiles * LANES, m), f"iree_glm_bf16_convert_{k}_m{'dyn' if m is None else m}"
    wt, flat, wn = _weight(k, tiles)
    per = -(-tiles // N_CHUNKS)
    row = xb_row_bytes(k)
    mt, dims = ("?", "{%m}") if m is None else (str(m), "")
    get_m = f"%m = tensor.dim %x, %c0 : tensor<?x{k}xf32>" if m is None else f"%m = arith.constant {m} : index"
    dispatch = KernelDispatch(
        name=name, symbol=MATMUL_SYMBOL, grid=(-(-tiles // per), Ceildiv(obj.rows_per_call)),
        bindings=(Binding("x", "i8", "%xn"), Binding("q", "bf16", "%wn"), Binding("y", "f32", "%yn")),
        constants={"k": k, "n": n, "tiles": tiles, "wn": wn, "row": row, "rows": per, "chunk": obj.rows_per_call},
        lines=MATMUL_RANGES, args=("%m", "%tiles", "%k", "%r0", "%r1", "%m0", "%m1"), operands=("%m",))
    return f"""
{quantize_executable(cname, obj, CONVERT_SYMBOL, k, row, {})}
{dispatch.text(obj)}
util.func private @{name}(%x: tensor<{mt}x{k}xf32>, %w: {wt}) -> tensor<{mt}x{n}xf32> {{
  %c0 = arith.constant 0 : index
  %row = arith.constant {row} : index
  {get_m}
  %on = arith.muli %m, %row : index
  %wf = tensor.collapse_shape %w [[0, 1, 2, 3]] : {wt} into {flat}
  {quantize_dispatch(cname, k, m, None)}
  %y = flow.dispatch @{name}_exe::@{name}[%m](%xq, %wf, %m) : (tensor<?xi8>{{%on}}, {flat}, index) -> tensor<{mt}x{n}xf32>{dims}
  util.return %y : tensor<{mt}x{n}xf32>
}}
"""
