"""The CPU int4 kernels: hand-written AVX2 matrix products linked into IREE dispatches.

IREE's code generation of the fused int4 dequant-matmul (passes/dequant_matmul.py) stayed
below fp32 speed on this AVX2 CPU in every form tried (the nibble unpacking and the two-level
group reduction came out as transposes or scalar code; docs/kernels.md). For int4
layers with fp32 activations on x86-64 with AVX2 + FMA + F16C, the pass instead replaces the
matmul by dispatches that call `kernels/x86_64_avx2/int4.c`: a matrix-vector kernel for
decode (M=1); for prefill and batched decode a dispatch quantizing x's rows, then a matrix
kernel on tiles of 4 rows of x x 16 weight rows; all with integer dot products in the manner
of llama.cpp's Q4_0 x Q8_0 (x quantized to int8 per block of 32 at run time).

IREE links the object into the dispatch's executable (a `stream.executable` whose function
declaration is `hal.import.static`, see IREE's samples/custom_dispatch/cpu/embedded). The
object is compiled at build time with the system C compiler; other targets keep the generic
fused form. What the kernels compute is modelled in torch by `quant.quantize_activations`
(tests compare the two).
"""

from __future__ import annotations

from iree_glm.kernels.toolchain import X86_64_AVX2, KernelObject, KernelUnavailable, unavailable_reason  # noqa: F401  (this kernel's API)
from iree_glm.kernels import bf16 as bf16_kernel, toolchain
from iree_glm.kernels.static_executable import (MATMUL_RANGES, QUANT_ROWS, VERIFY_SIZES, Binding, Ceildiv, Glue, KernelDispatch,  # noqa: F401  (QUANT_ROWS: this kernel's API)
                                                quantize_dispatch, quantize_executable, quantize_inputs)

from pathlib import Path
from typing import Optional

SOURCE = X86_64_AVX2.source("int4")  # the AVX2 set's; other sets: `kernel_set.source("int4")`
SYMBOL = "iree_glm_int4_matvec_workgroup"  # one row of x (decode)
QUANTIZE_SYMBOL = "iree_glm_int4_quantize_workgroup"  # rows of x -> int8 blocks (prefill, batched decode)
GLUE_SYMBOLS = {"silu_mul": "iree_glm_int4_quantize_silu_mul_workgroup", "rms_norm": "iree_glm_int4_quantize_rms_norm_workgroup"}
VERIFY_SYMBOL = "iree_glm_int4_matvec_rows_workgroup"  # a few rows of x, each as the one-row kernel (verify)
MATMUL_SYMBOL = "iree_glm_int4_matmul_workgroup"  # quantized rows of x x a range of weight rows
# The AMX set's bf16 prompt path (x86_64_amx/int4.c): x's rows to bf16, weights widened to bf16 tiles
BF16_CONVERT_SYMBOL = "iree_glm_int4_convert_bf16_workgroup"
BF16_MATMUL_SYMBOL = "iree_glm_int4_bf16_matmul_workgroup"
BF16_GLUE_SYMBOLS = {"silu_mul": "iree_glm_int4_convert_bf16_silu_mul_workgroup", "rms_norm": "iree_glm_int4_convert_bf16_rms_norm_workgroup"}
BF16_MAX_GROUP = 256  # it widens K in pieces of whole groups of up to WIDE_K elements
# The sets whose prompt dispatches take the bf16 path (measured faster than their tdpbssd kernel,
# docs/kernels.md); their features include bf16.FEATURES.
BF16_PROMPT_SETS = ("x86_64_amx",)
MAX_K = 8192  # the decode kernel keeps x's int8 copy on the stack (the matrix kernel walks K in chunks)
BLOCK = 32  # activation block; group sizes must be multiples
MATMUL_MAX_GROUP = 1024  # the matrix kernels walk K in chunks of whole groups (x86_64_avx512/int4.c: CHUNK_K)
PANEL = 16  # weight rows the matrix kernel handles together (two vectors of 8 lanes)
WORKGROUPS = 16  # decode: row ranges per dispatch, several per core balance shared cores
DECODE_STRIP = 8  # decode and verify take weight rows 8 at a time (x86_64_avx2/int4.c)
GLUE_MAX_K = 8192  # kernels/x86_64_avx2/row_glue.h: the longest row a fused quantization transforms (on the stack)
N_CHUNKS = 8  # matrix kernel: weight-row ranges per dispatch, times ranges of the rows of x one
# call takes (the object's rows_per_call)


def build_object(folder: Path, kernel_set: toolchain.KernelSet = X86_64_AVX2) -> KernelObject:
    """The int4 kernels of `kernel_set` as an object in `folder` (raises KernelUnavailable where
    they cannot build or run). The MLIR below is the same for every set: the same symbols,
    arguments, weight layouts and quantized rows of x; only the rows per call differ."""
    return toolchain.build_kernel(folder, "int4", kernel_set)


def fits(k: int, group: int, m: Optional[int] = 1) -> bool:
    """Whether the kernel handles K, G and M (None: dynamic) rows of x."""
    return group % BLOCK == 0 and k % group == 0 and (k <= MAX_K if m == 1 else group <= MATMUL_MAX_GROUP)


def fits_bf16(k: int, group: int) -> bool:
    """Whether the AMX set's bf16 prompt path handles K and G (groups of whole 32-k tile steps)."""
    return group % BLOCK == 0 and group <= BF16_MAX_GROUP and k % group == 0


def function_name(k: int, n: int, group: int, m: Optional[int] = 1) -> str:
    rows = "" if m == 1 else f"_m{m if m is not None else 'dyn'}"
    return f"iree_glm_int4_matvec_{k}x{n}g{group}{rows}"


def verify_name(k: int, n: int, group: int) -> str:
    """The verify entry point's few-row kernel call (VERIFY_SYMBOL) for K x N, group G."""
    return f"iree_glm_int4_verify_{k}x{n}g{group}"


def quantize_name(k: int, group: int, m: Optional[int]) -> str:
    """The quantization dispatch's name: one per K, G and M, shared by the layers with that input."""
    return f"iree_glm_int4_quantize_{k}g{group}_m{m if m is not None else 'dyn'}"


def definitions(k: int, n: int, group: int, obj: KernelObject, m: Optional[int] = 1, glue: Optional[Glue] = None, verify: bool = False) -> str:
    """MLIR text: the executables calling the kernels and a util.func wrapper the pass calls.

    The wrapper takes x [M, K] f32, qweight [N, K/G, G/2] i8, scale [N, K/G] f16 and returns
    [M, N] f32; it flattens them for one `flow.dispatch` of WORKGROUPS row ranges (M = 1: the
    matrix-vector kernel), or for M != 1 the quantization and matrix dispatches
    (`_matmul_definitions`; with `glue`, the wrapper takes the glue's inputs instead of x:
    Glue.inputs). M is static or None (dynamic). With `verify` (M dynamic, a few rows), one
    dispatch of VERIFY_SYMBOL, whose every row is the matrix-vector kernel's for that row alone.
    """
    if m != 1 and not verify:
        return _matmul_definitions(k, n, group, obj, m, glue)
    name, gn, half = verify_name(k, n, group) if verify else function_name(k, n, group), k // group, group // 2
    rows = -(-n // WORKGROUPS // DECODE_STRIP) * DECODE_STRIP  # rows per workgroup, whole strips
    count = -(-n // rows)
    qn, sn = n * gn * half, n * gn
    dispatch = KernelDispatch(
        name=name, symbol=VERIFY_SYMBOL if verify else SYMBOL, grid=(count,),
        bindings=(Binding("x", "f32", "%xn" if verify else "%k"), Binding("q", "i8", "%qn"), Binding("s", "f16", "%sn"),
                  Binding("y", "f32", "%yn" if verify else "%n")),
        constants={"k": k, "n": n, "g": group, "qn": qn, "sn": sn, "rows": rows},
        lines=(*VERIFY_SIZES * verify, "%r0 = arith.muli %wx, %rows : index", "%r1 = arith.addi %r0, %rows : index"),
        args=(*("%m",) * verify, "%n", "%k", "%g", "%r0", "%r1"), operands=("%m",) * verify,
        one_row=(SYMBOL, ("%n", "%k", "%g", "%r0", "%r1")) if verify else None)
    weights = f"""%qf = tensor.collapse_shape %q [[0, 1, 2]] : tensor<{n}x{gn}x{half}xi8> into tensor<{qn}xi8>
  %sf = tensor.collapse_shape %s [[0, 1]] : tensor<{n}x{gn}xf16> into tensor<{sn}xf16>"""
    if verify:  # x [M, K] and y [M, N] as they are (flat memrefs of M rows in the dispatch)
        return f"""
{dispatch.text(obj)}
util.func private @{name}(%x: tensor<?x{k}xf32>, %q: tensor<{n}x{gn}x{half}xi8>, %s: tensor<{n}x{gn}xf16>) -> tensor<?x{n}xf32> {{
  %c0 = arith.constant 0 : index
  %m = tensor.dim %x, %c0 : tensor<?x{k}xf32>
  {weights}
  %y = flow.dispatch @{name}_exe::@{name}(%x, %qf, %sf, %m) : (tensor<?x{k}xf32>{{%m}}, tensor<{qn}xi8>, tensor<{sn}xf16>, index) -> tensor<?x{n}xf32>{{%m}}
  util.return %y : tensor<?x{n}xf32>
}}
"""
    return f"""
{dispatch.text(obj)}
util.func private @{name}(%x: tensor<1x{k}xf32>, %q: tensor<{n}x{gn}x{half}xi8>, %s: tensor<{n}x{gn}xf16>) -> tensor<1x{n}xf32> {{
  %xf = tensor.collapse_shape %x [[0, 1]] : tensor<1x{k}xf32> into tensor<{k}xf32>
  {weights}
  %y = flow.dispatch @{name}_exe::@{name}(%xf, %qf, %sf) : (tensor<{k}xf32>, tensor<{qn}xi8>, tensor<{sn}xf16>) -> tensor<{n}xf32>
  %y2 = tensor.expand_shape %y [[0, 1]] output_shape [1, {n}] : tensor<{n}xf32> into tensor<1x{n}xf32>
  util.return %y2 : tensor<1x{n}xf32>
}}
"""


def bf16_prompt(obj: KernelObject, k: int, group: int) -> bool:
    """Whether prompts of K, G on `obj` take the bf16 path (x to bf16, weights widened to bf16
    tiles) rather than the int8 blocks: its set's choice, for the groups the path takes (all the
    CLI offers; larger ones keep the tdpbssd kernel)."""
    return obj.kernel_set.name in BF16_PROMPT_SETS and fits_bf16(k, group)


def _matmul_definitions(k: int, n: int, group: int, obj: KernelObject, m: Optional[int], glue: Optional[Glue]) -> str:
    """Two dispatches: x's rows quantized once (QUANT_ROWS rows a workgroup; on the bf16 path
    converted to bf16 instead), then the matrix kernel on a grid of N_CHUNKS weight-row ranges
    (whole panels of PANEL) x ceil(M / obj.rows_per_call)."""
    name, gn, half = function_name(k, n, group, m), k // group, group // 2
    suffix = glue.suffix() if glue else ""
    wide = bf16_prompt(obj, k, group)
    qname = (f"iree_glm_int4_convert_bf16_{k}_m{m if m is not None else 'dyn'}" if wide else quantize_name(k, group, m)) + suffix
    ins = quantize_inputs(k, m, glue)
    rows = -(-n // N_CHUNKS // PANEL) * PANEL
    count = -(-n // rows)
    qn, sn, xq_row = n * gn * half, n * gn, bf16_kernel.xb_row_bytes(k) if wide else xq_row_bytes(k)
    mt = "?" if m is None else str(m)
    dims = "{%m}" if m is None else ""
    get_m = f"%m = tensor.dim %x, %c0 : {ins[0][1]}" if m is None else f"%m = arith.constant {m} : index"
    symbol = (BF16_GLUE_SYMBOLS if wide else GLUE_SYMBOLS)[glue.kind] if glue else BF16_CONVERT_SYMBOL if wide else QUANTIZE_SYMBOL
    args = "".join(f"{v}: {t}, " for v, t, _ in ins)
    chunk = obj.rows_per_call
    dispatch = KernelDispatch(
        name=name, symbol=BF16_MATMUL_SYMBOL if wide else MATMUL_SYMBOL, grid=(count, Ceildiv(chunk)),
        bindings=(Binding("x", "i8", "%xn"), Binding("q", "i8", "%qn"), Binding("s", "f16", "%sn"), Binding("y", "f32", "%yn")),
        constants={"k": k, "n": n, "g": group, "qn": qn, "sn": sn, "row": xq_row, "rows": rows, "chunk": chunk},
        lines=MATMUL_RANGES, args=("%m", "%n", "%k", "%g", "%r0", "%r1", "%m0", "%m1"), operands=("%m",))
    return f"""
{quantize_executable(qname, obj, symbol, k, xq_row, {} if wide else {"g": group}, glue)}
{dispatch.text(obj)}
util.func private @{name}{suffix}({args}%q: tensor<{n}x{gn}x{half}xi8>, %s: tensor<{n}x{gn}xf16>) -> tensor<{mt}x{n}xf32> {{
  %c0 = arith.constant 0 : index
  %row = arith.constant {xq_row} : index
  {get_m}
  %on = arith.muli %m, %row : index
  %qf = tensor.collapse_shape %q [[0, 1, 2]] : tensor<{n}x{gn}x{half}xi8> into tensor<{qn}xi8>
  %sf = tensor.collapse_shape %s [[0, 1]] : tensor<{n}x{gn}xf16> into tensor<{sn}xf16>
  {quantize_dispatch(qname, k, m, glue)}
  %y = flow.dispatch @{name}_exe::@{name}[%m](%xq, %qf, %sf, %m) : (tensor<?xi8>{{%on}}, tensor<{qn}xi8>, tensor<{sn}xf16>, index) -> tensor<{mt}x{n}xf32>{dims}
  util.return %y : tensor<{mt}x{n}xf32>
}}
"""


def xq_row_bytes(k: int) -> int:
    """Bytes of one quantized row of x (the C kernel's xq_row_bytes): K int8, K/32 f32 scales
    and K/32 i32 sums, padded to 32."""
    return k + -(-(k // BLOCK * 8) // 32) * 32
