"""The CPU int8 kernels: hand-written AVX2 matrix products linked into IREE dispatches.

IREE's tuned generic for int8 decode (passes/dequant_matmul.py, `cpu_tiles`) converts every
weight byte to f32 and streamed the 330M model's weights well below this machine's read rate.
For int8 layers with f32 activations on x86-64 with AVX2 + FMA + F16C, the pass instead makes
decode (M = 1) matmuls calls of `kernels/int8_avx2.c`: x quantized to int8 per block of 32 at
run time (as llama.cpp's Q8_0), integer dot products on the weights' stored bytes
(quant.py's [N/16, K, 16] layout, one contiguous stream per tile of 16 output rows), software
prefetch. The per-channel weight scale stays in the graph, after the call.

The object is built and linked like the int4 kernels' (int4_kernel.build_object and
static_executable, the same host checks); other targets keep the generic fused form. What
the kernel computes is modelled in torch by `quant.quantize_activations(x, 32)` times the
integer weights (tests compare the two).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from . import int4_kernel

SOURCE = Path(__file__).resolve().parent / "kernels" / "int8_avx2.c"
SYMBOL = "iree_glm_int8_matvec_workgroup"  # one row of x (decode)
MAX_K = 16384  # the decode kernel keeps x's int8 copies on the stack
BLOCK = 32  # activation block (and K's granularity)
LANES = 16  # output rows per tile of the stored layout
WORKGROUPS = 16  # decode: tile ranges per dispatch, several per core balance shared cores

KernelUnavailable = int4_kernel.KernelUnavailable
unavailable_reason = int4_kernel.unavailable_reason


def build_object(folder: Path) -> Path:
    """Compile the int8 kernels to an ELF object in `folder` (kept until IREE has linked it)."""
    return int4_kernel.build_object(folder, SOURCE)


def fits(k: int, lanes: int, m: Optional[int]) -> bool:
    """Whether the kernel handles K, the layout's tile width and M (None: dynamic) rows of x."""
    return m == 1 and lanes == LANES and k % BLOCK == 0 and k <= MAX_K


def function_name(k: int, n: int) -> str:
    return f"iree_glm_int8_matvec_{k}x{n}"


def definitions(k: int, tiles: int, obj: Path) -> str:
    """MLIR text: the executable calling the kernel and a util.func wrapper the pass calls.

    The wrapper takes x [1, K] f32 and qweight [N/16, K, 16] i8 and returns [1, N] f32 (before
    the weight scale); it flattens them for one `flow.dispatch` of WORKGROUPS tile ranges.
    """
    n = tiles * LANES
    name = function_name(k, n)
    per = -(-tiles // WORKGROUPS)  # tiles per workgroup
    count = -(-tiles // per)
    qn = tiles * k * LANES
    sig = "memref<?xf32>, memref<?xi8>, memref<?xf32>, index, index, index, index"
    return f"""
{int4_kernel.static_executable(name, obj)}
  stream.executable.export public @{name} workgroups() -> (index, index, index) {{
    %count = arith.constant {count} : index
    %c1 = arith.constant 1 : index
    stream.return %count, %c1, %c1 : index, index, index
  }}
  builtin.module {{
    func.func private @{SYMBOL}({sig}) attributes {{hal.import.static}}
    func.func @{name}(%bx: !stream.binding, %bq: !stream.binding, %by: !stream.binding) {{
      %c0 = arith.constant 0 : index
      %k = arith.constant {k} : index
      %n = arith.constant {n} : index
      %tiles = arith.constant {tiles} : index
      %qn = arith.constant {qn} : index
      %per = arith.constant {per} : index
      %wg = stream.dispatch.workgroup.id[0] : index
      %t0 = arith.muli %wg, %per : index
      %t1 = arith.addi %t0, %per : index
      %x = stream.binding.subspan %bx[%c0] : !stream.binding -> memref<?xf32>{{%k}}
      %q = stream.binding.subspan %bq[%c0] : !stream.binding -> memref<?xi8>{{%qn}}
      %y = stream.binding.subspan %by[%c0] : !stream.binding -> memref<?xf32>{{%n}}
      func.call @{SYMBOL}(%x, %q, %y, %tiles, %k, %t0, %t1) : ({sig}) -> ()
      return
    }}
  }}
}}
util.func private @{name}(%x: tensor<1x{k}xf32>, %q: tensor<{tiles}x{k}x{LANES}xi8>) -> tensor<1x{n}xf32> {{
  %xf = tensor.collapse_shape %x [[0, 1]] : tensor<1x{k}xf32> into tensor<{k}xf32>
  %qf = tensor.collapse_shape %q [[0, 1, 2]] : tensor<{tiles}x{k}x{LANES}xi8> into tensor<{qn}xi8>
  %y = flow.dispatch @{name}_exe::@{name}(%xf, %qf) : (tensor<{k}xf32>, tensor<{qn}xi8>) -> tensor<{n}xf32>
  %y2 = tensor.expand_shape %y [[0, 1]] output_shape [1, {n}] : tensor<{n}xf32> into tensor<1x{n}xf32>
  util.return %y2 : tensor<1x{n}xf32>
}}
"""
