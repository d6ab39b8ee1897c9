"""The MLIR glue that calls our kernels: `stream.executable`s whose functions are
`hal.import.static` declarations of a kernel object (see IREE's samples/custom_dispatch/cpu/embedded),
and the row-quantization dispatch every integer matrix kernel reads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from iree_glm.kernels.toolchain import object_format

QUANT_ROWS = 16  # rows of x per workgroup of the quantization dispatch


def static_executable(name: str, obj: Path) -> str:
    """The opening line of `stream.executable @{name}_exe` linking our kernel object `obj` for
    llvm-cpu in the object's executable format (IREE's `hal.executable.objects`: embedded-elf-x86_64
    or embedded-elf-arm_64); the caller writes the body and the closing brace. Shared by every
    kernel's dispatches."""
    return (f"stream.executable private @{name}_exe attributes {{hal.executable.objects = #hal.executable.objects<{{\n"
            f'  #hal.executable.target<"llvm-cpu", "{object_format(obj)}"> = [#hal.executable.object<{{path = "{obj}"}}>]}}>}} {{')


@dataclass(frozen=True)
class Glue:
    """The elementwise step producing x that a quantization dispatch computes itself
    (kernels/x86_64_avx2/row_glue.h), instead of reading x from a dispatch of IREE's:
    "silu_mul": x = silu(gate) * up of rows [gate | up] of a [M, 2K] input, each first times its
    column's scale (a [2K] input) if `scaled` (int8: the gate/up weight scale after its kernel);
    "rms_norm": x = h * rsqrt(mean(h^2) + eps) * w of h [M, K] and w [K]."""

    kind: str
    eps: float = 0.0
    scaled: bool = False

    def eps_bits(self) -> int:
        return struct.unpack("<I", struct.pack("<f", self.eps))[0]

    def suffix(self) -> str:
        """Part of the dispatch's and wrapper's names (eps as its f32 bits: one executable per eps)."""
        if self.kind == "rms_norm":
            return f"_rms_norm_{self.eps_bits():08x}"
        return "_silu_mul_scaled" if self.scaled else "_silu_mul"

    def inputs(self, k: int, m: Optional[int]) -> list[tuple[str, str, bool]]:
        """The quantization's inputs: (SSA name, tensor type, has the dynamic M) for x or the glue's operands."""
        mt = "?" if m is None else str(m)
        if self.kind == "silu_mul":
            return [("%x", f"tensor<{mt}x{2 * k}xf32>", True)] + ([("%w", f"tensor<{2 * k}xf32>", False)] if self.scaled else [])
        return [("%x", f"tensor<{mt}x{k}xf32>", True), ("%w", f"tensor<{k}xf32>", False)]


def quantize_inputs(k: int, m: Optional[int], glue: Optional[Glue]) -> list[tuple[str, str, bool]]:
    """The quantization dispatch's tensor inputs (Glue.inputs; plain x [M, K] without glue)."""
    return glue.inputs(k, m) if glue else [("%x", f"tensor<{'?' if m is None else m}x{k}xf32>", True)]


def quantize_dispatch(qname: str, k: int, m: Optional[int], glue: Optional[Glue]) -> str:
    """The wrapper's line calling the quantization dispatch into %xq (needs %m and %on)."""
    ins = quantize_inputs(k, m, glue)
    dims = "{%m}" if m is None else ""
    types = ", ".join(f"{t}{dims if dyn else ''}" for _, t, dyn in ins)
    return (f"%xq = flow.dispatch @{qname}_exe::@{qname}[%m]({', '.join(v for v, _, _ in ins)}, %m) : "
            f"({types}, index) -> tensor<?xi8>{{%on}}")


def quantize_executable(name: str, obj: Path, symbol: str, k: int, row_bytes: int, params: dict[str, int],
                        glue: Optional[Glue] = None) -> str:
    """`stream.executable @{name}_exe` whose dispatch quantizes M rows of x [M, K] f32 (QUANT_ROWS a
    workgroup) into rows of `row_bytes` by calling the kernel `symbol`(x, out, M, K, *params,
    first row, end row): the int4 kernels' (params: the group size) and the int8 kernels' (none).
    With `glue`, the kernel computes x itself: `symbol`(input, [w or scale,] out, M, K, *params,
    [eps,] first row, end row)."""
    extra = glue is not None and (glue.kind == "rms_norm" or glue.scaled)
    width = 2 * k if glue is not None and glue.kind == "silu_mul" else k
    memrefs = ["memref<?xf32>", *(["memref<?xf32>"] if extra else []), "memref<?xi8>"]
    eps = glue is not None and glue.kind == "rms_norm"
    sig = ", ".join([*memrefs, *["index"] * (2 + len(params)), *(["f32"] if eps else []), "index", "index"])
    consts = "".join(f"      %{p} = arith.constant {v} : index\n" for p, v in params.items())
    if eps:
        consts += f"      %eps = arith.constant 0x{glue.eps_bits():08X} : f32\n"
    args = "".join(f"%{p}, " for p in params) + ("%eps, " if eps else "")
    w_binding = "%bw: !stream.binding, " if extra else ""
    w_view = (f"      %wn = arith.constant {width if glue.kind == 'silu_mul' else k} : index\n"
              f"      %w = stream.binding.subspan %bw[%c0] : !stream.binding -> memref<?xf32>{{%wn}}\n") if extra else ""
    w_arg = "%w, " if extra else ""
    return f"""{static_executable(name, obj)}
  stream.executable.export public @{name} workgroups(%m: index) -> (index, index, index) {{
    %c1 = arith.constant 1 : index
    %chunks = affine.apply affine_map<()[s0] -> (s0 ceildiv {QUANT_ROWS})>()[%m]
    stream.return %chunks, %c1, %c1 : index, index, index
  }}
  builtin.module {{
    func.func private @{symbol}({sig}) attributes {{hal.import.static}}
    func.func @{name}(%bx: !stream.binding, {w_binding}%bo: !stream.binding, %m: index) {{
      %c0 = arith.constant 0 : index
      %k = arith.constant {k} : index
      %width = arith.constant {width} : index
{consts}      %row = arith.constant {row_bytes} : index
      %chunk = arith.constant {QUANT_ROWS} : index
      %xn = arith.muli %m, %width : index
      %on = arith.muli %m, %row : index
      %wg = stream.dispatch.workgroup.id[0] : index
      %r0 = arith.muli %wg, %chunk : index
      %r1 = arith.addi %r0, %chunk : index
      %x = stream.binding.subspan %bx[%c0] : !stream.binding -> memref<?xf32>{{%xn}}
{w_view}      %o = stream.binding.subspan %bo[%c0] : !stream.binding -> memref<?xi8>{{%on}}
      func.call @{symbol}(%x, {w_arg}%o, %m, %k, {args}%r0, %r1) : ({sig}) -> ()
      return
    }}
  }}
}}"""
