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
class Binding:
    """A dispatch buffer the kernel reads or writes, seen as a flat `memref<?x{element}>` named
    `%{name}` (its binding `%b{name}`) of `size` elements (an SSA index value of the function),
    starting `offset` bytes into the binding (a part of a larger tensor, read where it lies)."""

    name: str
    element: str
    size: str
    offset: str = "%c0"


@dataclass(frozen=True)
class Ceildiv:
    """A grid dimension of ceil(M / rows) workgroups, M being the dispatch's workload `%m`."""

    rows: int


@dataclass(frozen=True)
class KernelDispatch:
    """One `stream.executable` whose only function calls the C function `symbol` once per
    workgroup: the grid (up to 3 dimensions: a count or a Ceildiv of %m; %wx, %wy, %wz are the
    workgroup's ids), the buffers, the index operands after them (`%m` first where the grid
    depends on it), index constants, lines computing the rest (sizes, row ranges) and the call's
    arguments after the buffers' views (`%value` is an index, `(%value, type)` any other type).
    Every kernel of ours (int4, int8, attention) is described this way; `text` writes the MLIR.

    `one_row` (symbol, index args): where the operand %m is 1, call that function of the same
    object instead, on the same buffers. The branch is inside the dispatch, not around it: a
    branch in the calling function splits the call's work into one submission per side (a
    command buffer, a queue-ordered allocation and a wait each: docs/speculative.md)."""

    name: str
    symbol: str
    grid: tuple[int | Ceildiv, ...]
    bindings: tuple[Binding, ...]
    constants: dict[str, int | str]
    lines: tuple[str, ...]
    args: tuple[str | tuple[str, str], ...]
    operands: tuple[str, ...] = ()
    one_row: tuple[str, tuple[str, ...]] | None = None

    def text(self, obj: Path) -> str:
        dynamic = any(isinstance(g, Ceildiv) for g in self.grid)
        grid = [*self.grid, *[1] * (3 - len(self.grid))]
        counts, values = [], []
        for i, g in enumerate(grid):
            if isinstance(g, Ceildiv):
                counts.append(f"    %g{i} = affine.apply affine_map<()[s0] -> (s0 ceildiv {g.rows})>()[%m]")
            else:
                counts.append(f"    %g{i} = arith.constant {g} : index")
            values.append(f"%g{i}")
        args = [(a, "index") if isinstance(a, str) else a for a in self.args]
        sig = ", ".join([f"memref<?x{b.element}>" for b in self.bindings] + [t for _, t in args])
        params = ", ".join([f"%b{b.name}: !stream.binding" for b in self.bindings] + [f"{o}: index" for o in self.operands])
        consts = [f"      %{c} = arith.constant {v} : index" if isinstance(v, int) else f"      %{c} = arith.constant {v}"
                  for c, v in self.constants.items()]
        views = [f"      %{b.name} = stream.binding.subspan %b{b.name}[{b.offset}] : !stream.binding -> memref<?x{b.element}>{{{b.size}}}"
                 for b in self.bindings]
        call_args = ", ".join([f"%{b.name}" for b in self.bindings] + [a for a, _ in args])
        body = "\n".join([*consts, *(f"      {line}" for line in self.lines), *views])
        declare = f"func.func private @{self.symbol}({sig}) attributes {{hal.import.static}}"
        call = f"func.call @{self.symbol}({call_args}) : ({sig}) -> ()"
        if self.one_row is not None:
            symbol, one_args = self.one_row
            one_sig = ", ".join([f"memref<?x{b.element}>" for b in self.bindings] + ["index"] * len(one_args))
            one_call = ", ".join([f"%{b.name}" for b in self.bindings] + list(one_args))
            declare += f"\n    func.func private @{symbol}({one_sig}) attributes {{hal.import.static}}"
            call = (f"%c1 = arith.constant 1 : index\n      %single = arith.cmpi eq, %m, %c1 : index\n"
                    f"      scf.if %single {{\n        func.call @{symbol}({one_call}) : ({one_sig}) -> ()\n"
                    f"      }} else {{\n        {call}\n      }}")
        return f"""{static_executable(self.name, obj)}
  stream.executable.export public @{self.name} workgroups({"%m: index" if dynamic else ""}) -> (index, index, index) {{
{chr(10).join(counts)}
    stream.return {", ".join(values)} : index, index, index
  }}
  builtin.module {{
    {declare}
    func.func @{self.name}({params}) {{
      %c0 = arith.constant 0 : index
      %wx = stream.dispatch.workgroup.id[0] : index
      %wy = stream.dispatch.workgroup.id[1] : index
{body}
      {call}
      return
    }}
  }}
}}"""


# A matrix kernel's workgroup (%wx, %wy) takes weight rows [%r0, %r1) (%rows a workgroup) and rows of
# x [%m0, %m1) (%chunk a workgroup); %xn / %yn are the quantized x's bytes and y's elements.
MATMUL_RANGES = ("%xn = arith.muli %m, %row : index", "%yn = arith.muli %m, %n : index",
                 "%r0 = arith.muli %wx, %rows : index", "%r1 = arith.addi %r0, %rows : index",
                 "%m0 = arith.muli %wy, %chunk : index", "%m1 = arith.addi %m0, %chunk : index")


# A verify kernel's x [M, K] and y [M, N] as flat buffers: %xn and %yn elements (M the operand %m).
VERIFY_SIZES = ("%xn = arith.muli %m, %k : index", "%yn = arith.muli %m, %n : index")


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
    eps = glue is not None and glue.kind == "rms_norm"
    constants: dict[str, int | str] = {"k": k, "width": width, **params, "row": row_bytes, "chunk": QUANT_ROWS}
    if extra:
        constants["wn"] = width if glue.kind == "silu_mul" else k
    if eps:
        constants["eps"] = f"0x{glue.eps_bits():08X} : f32"
    return KernelDispatch(
        name=name, symbol=symbol, grid=(Ceildiv(QUANT_ROWS),),
        bindings=(Binding("x", "f32", "%xn"), *([Binding("w", "f32", "%wn")] if extra else []), Binding("o", "i8", "%on")),
        constants=constants,
        lines=("%xn = arith.muli %m, %width : index", "%on = arith.muli %m, %row : index",
               "%r0 = arith.muli %wx, %chunk : index", "%r1 = arith.addi %r0, %chunk : index"),
        args=("%m", "%k", *(f"%{p}" for p in params), *([("%eps", "f32")] if eps else []), "%r0", "%r1"),
        operands=("%m",),
    ).text(obj)
