"""The CPU int8 kernels: hand-written AVX2 matrix products linked into IREE dispatches.

IREE's tuned generic for int8 decode (passes/dequant_matmul.py, `cpu_tiles`) converts every
weight byte to f32 and streamed the 330M model's weights well below this machine's read rate.
For int8 matmuls with f32 activations on x86-64 with AVX2 + FMA + F16C, the pass instead calls
`kernels/x86_64_avx2/int8.c`, which reads the weights' stored bytes (quant.py's [N/16, K, 16] layout,
one contiguous stream per tile of 16 output rows) and multiplies integers exactly (the sign
trick, see the C file):
- one row of x (decode): a matrix-vector kernel, x quantized per block of 32 at run time (as
  llama.cpp's Q8_0), software prefetch;
- several rows, where the pass would emit an integer matmul (`int8_activations`): a dispatch
  quantizing x's rows (per row, the integer matmul's numbers), then a matrix kernel on tiles of
  16 weight rows x pairs of x rows. IREE's mmt4d ran at about the same speed but repacks the
  weights at load (one more byte per weight resident).
The per-channel weight scale stays in the graph, after the call.

The object is built and linked like the int4 kernels' (kernels/toolchain.py and
static_executable, the same host checks); other targets keep the generic fused form (or mmt4d).
What the kernels compute is modelled in torch by `quant.quantize_activations(x, 32)` and
`quant.quantize_rows` times the integer weights (tests compare them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from iree_glm.kernels import toolchain
from iree_glm.kernels.static_executable import (MATMUL_RANGES, QUANT_ROWS, VERIFY_SIZES, Binding, Ceildiv, Glue, KernelDispatch,  # noqa: F401
                                                quantize_dispatch, quantize_executable, quantize_inputs)
from iree_glm.kernels.toolchain import X86_64_AVX2, KernelObject, KernelUnavailable, unavailable_reason  # noqa: F401  (this kernel's API)

SOURCE = X86_64_AVX2.source("int8")  # the AVX2 set's; other sets: `kernel_set.source("int8")`
SYMBOL = "iree_glm_int8_matvec_workgroup"  # one row of x (decode)
QUANTIZE_SYMBOL = "iree_glm_int8_quantize_workgroup"  # rows of x -> int8 per row (prefill)
GLUE_SYMBOLS = {"silu_mul": "iree_glm_int8_quantize_silu_mul_workgroup", "rms_norm": "iree_glm_int8_quantize_rms_norm_workgroup"}
VERIFY_SYMBOL = "iree_glm_int8_matvec_rows_workgroup"  # a few rows of x, each as the one-row kernel (verify)
MATMUL_SYMBOL = "iree_glm_int8_matmul_workgroup"  # quantized rows of x x a range of weight tiles
MAX_K = 16384  # the decode kernel keeps x's int8 copies on the stack
BLOCK = 32  # activation block (and K's granularity)
LANES = 16  # output rows per tile of the stored layout
WORKGROUPS = 16  # decode: tile ranges per dispatch, several per core balance shared cores
N_CHUNKS = 8  # matrix kernel: weight-tile ranges per dispatch, times ranges of the rows of x one
# call takes (the object's rows_per_call: its C file's MAX_ROWS, or AMX_MAX_ROWS)


def build_object(folder: Path, kernel_set: toolchain.KernelSet = X86_64_AVX2) -> KernelObject:
    """The int8 kernels of `kernel_set` as an object in `folder` (raises KernelUnavailable where
    they cannot build or run). The MLIR below is the same for every set: the same symbols,
    arguments, weight layouts and quantized rows of x; only the rows per call differ."""
    return toolchain.build_kernel(folder, "int8", kernel_set)


def fits(k: int, lanes: int, m: Optional[int]) -> bool:
    """Whether the matrix-vector kernel handles K, the layout's tile width and M (None: dynamic)."""
    return m == 1 and lanes == LANES and k % BLOCK == 0 and k <= MAX_K


def matmul_fits(k: int, lanes: int) -> bool:
    """Whether the matrix kernel (any M) handles K and the layout's tile width."""
    return lanes == LANES and k % BLOCK == 0


def function_name(k: int, n: int, m: Optional[int] = 1) -> str:
    rows = "" if m == 1 else f"_m{m if m is not None else 'dyn'}"
    return f"iree_glm_int8_matvec_{k}x{n}{rows}"


def verify_name(k: int, n: int) -> str:
    """The verify entry point's few-row kernel call (VERIFY_SYMBOL) for K x N."""
    return f"iree_glm_int8_verify_{k}x{n}"


def quantize_name(k: int, m: Optional[int]) -> str:
    """The quantization dispatch's name: one per K and M, shared by the layers with that input."""
    return f"iree_glm_int8_quantize_{k}_m{m if m is not None else 'dyn'}"


def xq_row_bytes(k: int) -> int:
    """Bytes of one quantized row of x (the C kernel's xq_row_bytes): K int8, the f32 row scale, padded to 32."""
    return k + 32


def definitions(k: int, tiles: int, obj: KernelObject, verify: bool = False) -> str:
    """MLIR text: the executable calling the kernel and a util.func wrapper the pass calls.

    The wrapper takes x [1, K] f32 and qweight [N/16, K, 16] i8 and returns [1, N] f32 (before
    the weight scale); it flattens them for one `flow.dispatch` of WORKGROUPS tile ranges. With
    `verify`, x is [M, K] (M dynamic, a few rows) and the dispatch calls VERIFY_SYMBOL, whose
    every row is the matrix-vector kernel's result for that row alone.
    """
    n = tiles * LANES
    name = verify_name(k, n) if verify else function_name(k, n)
    per = -(-tiles // WORKGROUPS)  # tiles per workgroup
    count = -(-tiles // per)
    qn = tiles * k * LANES
    dispatch = KernelDispatch(
        name=name, symbol=VERIFY_SYMBOL if verify else SYMBOL, grid=(count,),
        bindings=(Binding("x", "f32", "%xn" if verify else "%k"), Binding("q", "i8", "%qn"), Binding("y", "f32", "%yn" if verify else "%n")),
        constants={"k": k, "n": n, "tiles": tiles, "qn": qn, "per": per},
        lines=(*VERIFY_SIZES * verify, "%t0 = arith.muli %wx, %per : index", "%t1 = arith.addi %t0, %per : index"),
        args=(*("%m",) * verify, "%tiles", "%k", "%t0", "%t1"), operands=("%m",) * verify,
        one_row=(SYMBOL, ("%tiles", "%k", "%t0", "%t1")) if verify else None)
    if verify:  # x [M, K] and y [M, N] as they are (flat memrefs of M rows in the dispatch)
        return f"""
{dispatch.text(obj)}
util.func private @{name}(%x: tensor<?x{k}xf32>, %q: tensor<{tiles}x{k}x{LANES}xi8>) -> tensor<?x{n}xf32> {{
  %c0 = arith.constant 0 : index
  %m = tensor.dim %x, %c0 : tensor<?x{k}xf32>
  %qf = tensor.collapse_shape %q [[0, 1, 2]] : tensor<{tiles}x{k}x{LANES}xi8> into tensor<{qn}xi8>
  %y = flow.dispatch @{name}_exe::@{name}(%x, %qf, %m) : (tensor<?x{k}xf32>{{%m}}, tensor<{qn}xi8>, index) -> tensor<?x{n}xf32>{{%m}}
  util.return %y : tensor<?x{n}xf32>
}}
"""
    return f"""
{dispatch.text(obj)}
util.func private @{name}(%x: tensor<1x{k}xf32>, %q: tensor<{tiles}x{k}x{LANES}xi8>) -> tensor<1x{n}xf32> {{
  %xf = tensor.collapse_shape %x [[0, 1]] : tensor<1x{k}xf32> into tensor<{k}xf32>
  %qf = tensor.collapse_shape %q [[0, 1, 2]] : tensor<{tiles}x{k}x{LANES}xi8> into tensor<{qn}xi8>
  %y = flow.dispatch @{name}_exe::@{name}(%xf, %qf) : (tensor<{k}xf32>, tensor<{qn}xi8>) -> tensor<{n}xf32>
  %y2 = tensor.expand_shape %y [[0, 1]] output_shape [1, {n}] : tensor<{n}xf32> into tensor<1x{n}xf32>
  util.return %y2 : tensor<1x{n}xf32>
}}
"""


def matmul_definitions(k: int, tiles: int, obj: KernelObject, m: Optional[int], glue: Optional[Glue] = None) -> str:
    """Two dispatches for M rows of x (static or None: dynamic): x's rows quantized once
    (QUANT_ROWS rows a workgroup), then the matrix kernel on a grid of N_CHUNKS weight-tile
    ranges x ceil(M / obj.rows_per_call). The wrapper takes x [M, K] f32 and qweight [N/16, K, 16] i8 and
    returns [M, N] f32 (before the weight scale), as passes/dequant_matmul.py's integer matmul.
    With `glue` (its silu_mul form `scaled`: the C kernel takes the gate/up weight scale) the
    wrapper takes the glue's inputs instead of x (Glue)."""
    if glue is not None and glue.kind == "silu_mul" and not glue.scaled:
        raise ValueError("the int8 kernel's silu_mul glue takes the gate/up weight scale (Glue.scaled)")
    n = tiles * LANES
    suffix = glue.suffix() if glue else ""
    name, qname = function_name(k, n, m), quantize_name(k, m) + suffix
    ins = quantize_inputs(k, m, glue)
    symbol = GLUE_SYMBOLS[glue.kind] if glue else QUANTIZE_SYMBOL
    args = "".join(f"{v}: {t}, " for v, t, _ in ins)
    per = -(-tiles // N_CHUNKS)
    count = -(-tiles // per)
    qn, row = tiles * k * LANES, xq_row_bytes(k)
    mt = "?" if m is None else str(m)
    dims = "{%m}" if m is None else ""
    get_m = f"%m = tensor.dim %x, %c0 : {ins[0][1]}" if m is None else f"%m = arith.constant {m} : index"
    chunk = obj.rows_per_call
    dispatch = KernelDispatch(
        name=name, symbol=MATMUL_SYMBOL, grid=(count, Ceildiv(chunk)),
        bindings=(Binding("x", "i8", "%xn"), Binding("q", "i8", "%qn"), Binding("y", "f32", "%yn")),
        constants={"k": k, "n": n, "tiles": tiles, "qn": qn, "row": row, "rows": per, "chunk": chunk},
        lines=MATMUL_RANGES, args=("%m", "%tiles", "%k", "%r0", "%r1", "%m0", "%m1"), operands=("%m",))
    return f"""
{quantize_executable(qname, obj, symbol, k, row, {}, glue)}
{dispatch.text(obj)}
util.func private @{name}{suffix}({args}%q: tensor<{tiles}x{k}x{LANES}xi8>) -> tensor<{mt}x{n}xf32> {{
  %c0 = arith.constant 0 : index
  %row = arith.constant {row} : index
  {get_m}
  %on = arith.muli %m, %row : index
  %qf = tensor.collapse_shape %q [[0, 1, 2]] : tensor<{tiles}x{k}x{LANES}xi8> into tensor<{qn}xi8>
  {quantize_dispatch(qname, k, m, glue)}
  %y = flow.dispatch @{name}_exe::@{name}[%m](%xq, %qf, %m) : (tensor<?xi8>{{%on}}, tensor<{qn}xi8>, index) -> tensor<{mt}x{n}xf32>{dims}
  util.return %y : tensor<{mt}x{n}xf32>
}}
"""
