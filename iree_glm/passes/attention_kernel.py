"""Attention as a call of our flash-attention kernel (llvm-cpu, x86-64 and aarch64).

IREE lowers `iree_linalg_ext.attention` on this CPU either through its fused path (~40x slower
here) or, with our host flags (`ATTENTION_DECOMPOSITION` + data tiling + ukernels), as a QK^T
mmt4d, an unpack of the whole score tensor, a softmax reduction, a pack and a PV mmt4d: the
scores go through memory twice and the causal mask's -inf half is computed anyway. On long
prompts attention then dominates prefill.

This pass runs on the input-phase IR, like passes/dequant_matmul.py, and replaces each
attention op of the form our model exports (q [H, M, D], k [H, N, D], v [H, N, E], a constant
scale, an additive mask [H, M, N], out [H, M, E]; H = batch x KV heads, M = positions x the
query heads of one KV head) by a dispatch calling the kernel set's `attention.c` (the driver
kernels/attention_tile.h on AVX2 / AVX-512 / NEON vectors, kernels/toolchain.py): an online
softmax over blocks of keys for 32 query rows per workgroup, skipping key blocks whose mask is
-inf for all of them. A block-sparse build (`--sparse-attention`, passes `window`) gives the
kernel its pattern too: a tile then visits only the key blocks of the globals and of its rows'
windows, the rest are neither read nor computed (dense is the pattern of every block). The dispatch needs its operands in memory, so the pass hands it the mask
before the broadcasts the model applies (over KV heads and over the query heads of a
position) and tells the kernel how to index it; otherwise the [H, M, N] mask would be written
and read H x group times over. Likewise a decode step's K and V that are one row of a cache
[R, Hkv, C, D] picked at run time (`read_cache_rows`): the dispatch takes the caches and the
row index and the kernel reads the row in place; a slice as the dispatch's operand would be
copied (IREE's `slow_memcpy`) at every step.

An exact `verify` (docs/speculative.md, "Exact decode") calls the same kernel: each row's sums
are lane-wise and in a fixed order, and a rescale of the rows whose running max did not grow is
by exactly 1, so every row of a call has the bits a one-row call gives it, whatever the row count
and the other rows of its tile (tests/kernels/test_attention_rows.py).

The object is built like the int4 kernels' (kernels/toolchain.py, for the target's kernel set);
on other targets the op is left to IREE (build.py records which form was built).

Use: `run(module, kernel_object[, window]) -> (rewritten, left to IREE)`, or
`python -m iree_glm.passes.attention_kernel IN.mlir -o OUT.mlir [--sparse local=W,global=G,block=B]`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional, Sequence

from iree.compiler import ir

from iree_glm.kernels import toolchain
from iree_glm.kernels.static_executable import Binding, Ceildiv, KernelDispatch
from iree_glm.kernels.toolchain import X86_64_AVX2, KernelUnavailable, unavailable_reason  # noqa: F401  (this kernel's API)
from iree_glm.passes import mlir_file
from iree_glm.passes.matching import indexing_maps, producer, shape

SOURCE = X86_64_AVX2.source("attention")  # the x86 form tests call directly
LAYOUT = toolchain.FOLDER / "attention_layout.h"  # ROWS, MAX_D: every set's
SYMBOL = "iree_glm_attention_workgroup"
ROWS = 32  # query rows per workgroup (the kernel's ROWS)
MAX_D = 128  # widest head the kernel's stack buffers hold (its MAX_D)
OP = "iree_linalg_ext.attention"
# q (h, m, d), k (h, n, d), v (h, n, e), scale, mask (h, m, n), out (h, m, e); dims (h, m, e, d, n).
_MAPS = ["(d0, d1, d2, d3, d4) -> (d0, d1, d3)", "(d0, d1, d2, d3, d4) -> (d0, d4, d3)",
         "(d0, d1, d2, d3, d4) -> (d0, d4, d2)", "(d0, d1, d2, d3, d4) -> ()",
         "(d0, d1, d2, d3, d4) -> (d0, d1, d4)", "(d0, d1, d2, d3, d4) -> (d0, d1, d2)"]



def build_object(folder: Path, kernel_set: toolchain.KernelSet = X86_64_AVX2) -> Path:
    """Compile `kernel_set`'s kernel to an ELF object in `folder` (raises KernelUnavailable where
    it cannot be built)."""
    return toolchain.build_object(folder, kernel_set.source("attention"), kernel_set)


@dataclass
class _Mask:
    value: ir.Value  # the tensor the kernel reads
    head_stride: Optional[int]  # elements between heads; None: M * N (the op's own mask)
    row_div: int  # query rows sharing one mask row
    padded: bool = False  # `value` is the mask before a -inf padding of its keys: the kernel visits its N keys only


@dataclass
class _Row:
    """K or V as one row of a cache [R, Hkv, C, D] picked at run time (a decode step's
    `read_cache_rows`): the kernel is handed the cache and the row, and reads the row in place.
    Handed the slice instead, IREE would copy the row into the dispatch's operand every step."""

    cache: ir.Value
    index: ir.Value  # the row, an index value


@dataclass
class _Match:
    op: ir.Operation
    q: ir.Value
    k: ir.Value
    v: ir.Value
    mask: _Mask
    scale: str  # the constant's attribute text, e.g. "0.125 : f32"
    rows: Optional[tuple[_Row, _Row]] = None  # K's and V's cache rows, when both are one


def _broadcast_input(op: Optional[ir.Operation]) -> Optional[tuple[ir.Value, list[str]]]:
    """(input, its map's results) if `op` is a linalg.generic that only copies one input to an
    identity-indexed output (a broadcast), else None."""
    if op is None or op.name != "linalg.generic" or len(op.operands) != 2:
        return None
    maps = [ir.AffineMapAttr(a).value for a in ir.ArrayAttr(op.attributes["indexing_maps"])]
    if maps[1] != ir.AffineMap.get_identity(maps[1].n_dims):
        return None
    block = op.regions[0].blocks[0]
    ops = list(block.operations)
    if len(ops) != 1 or ops[0].name != "linalg.yield" or ops[0].operands[0] != block.arguments[0]:
        return None
    return op.operands[0], [str(e) for e in maps[0].results]


def _ninf_pad_source(x: ir.Value) -> Optional[ir.Value]:
    """The source of `x` = `tensor.pad` of its last dimension's end only, with -inf, else None."""
    pad = producer(x)
    if pad is None or pad.name != "tensor.pad":
        return None
    low = list(ir.DenseI64ArrayAttr(pad.attributes["static_low"]))
    high = list(ir.DenseI64ArrayAttr(pad.attributes["static_high"]))
    if any(low) or any(high[:-1]):
        return None
    body = list(pad.regions[0].blocks[0].operations)
    const = producer(body[0].operands[0]) if len(body) == 1 and body[0].name == "tensor.yield" else None
    if const is None or const.name != "arith.constant" or not isinstance(const.attributes["value"], ir.FloatAttr):
        return None
    return pad.operands[0] if ir.FloatAttr(const.attributes["value"]).value == float("-inf") else None


def _mask_source(mask: ir.Value, unpad: bool = False) -> _Mask:
    """The mask before the model's broadcasts, when it has the exported form:

    [1, 1, M/g, N] -(broadcast over the g query heads of a position)-> [1, 1, M/g, g, N]
    -(reshape)-> [1, 1, M, N] -(broadcast over KV heads)-> [1, H, M, N] -(collapse)-> [H, M, N].
    With `unpad` (K and V are whole cache rows), [1, 1, M, N] may be a -inf padding of the N
    keys the prompt attends to the row's capacity (the model's `keys_in_place`): the kernel
    then takes the unpadded mask and visits those N keys only. Any other mask is read as it is.
    """
    as_is = _Mask(mask, None, 1)
    collapse = producer(mask)
    if collapse is None or collapse.name != "tensor.collapse_shape" or shape(collapse.operands[0])[0] != 1:
        return as_is
    heads = _broadcast_input(producer(collapse.operands[0]))
    if heads is None or heads[1] != ["d0", "0", "d2", "d3"] or ir.RankedTensorType(heads[0].type).rank != 4:
        return as_is
    shared = heads[0]  # [1, 1, M, N]
    unpadded = _ninf_pad_source(shared) if unpad else None
    if unpadded is not None:
        shared = unpadded
    reshape = producer(shared)
    if reshape is not None and reshape.name == "tensor.reshape":
        rows = _broadcast_input(producer(reshape.operands[0]))
        grouped = shape(reshape.operands[0])  # [1, 1, M/g, g, N]
        if rows is not None and rows[1] == ["d0", "d1", "d2", "d4"] and len(grouped) == 5 and grouped[3] > 0:
            return _Mask(rows[0], 0, grouped[3], unpadded is not None)
    return _Mask(shared, 0, 1, unpadded is not None)


def _cache_row(x: ir.Value) -> Optional[_Row]:
    """`x` [Hkv, C, D] as the collapse of `tensor.extract_slice %cache[%row, 0, 0, 0] [1, Hkv, C, D]`
    of a cache [R, Hkv, C, D] (a whole row at a run-time row index), else None."""
    collapse = producer(x)
    if collapse is None or collapse.name != "tensor.collapse_shape":
        return None
    if str(collapse.attributes["reassociation"]) != "[[0, 1], [2], [3]]":
        return None
    sl = producer(collapse.operands[0])
    if sl is None or sl.name != "tensor.extract_slice" or len(sl.operands) != 2:
        return None
    cache = sl.operands[0]
    full = shape(cache)
    offsets = list(ir.DenseI64ArrayAttr(sl.attributes["static_offsets"]))
    sizes = list(ir.DenseI64ArrayAttr(sl.attributes["static_sizes"]))
    strides = list(ir.DenseI64ArrayAttr(sl.attributes["static_strides"]))
    if len(full) != 4 or any(ir.ShapedType.is_dynamic_size(size) for size in full[1:]):
        return None
    if offsets[1:] != [0, 0, 0] or sizes != [1, *full[1:]] or strides != [1, 1, 1, 1]:
        return None
    return _Row(cache, sl.operands[1])


def match(op: ir.Operation) -> Optional[_Match]:
    """An attention op the kernel computes: f32, the maps above, a constant scale, a mask, D and E
    static multiples of 8 up to MAX_D, and a body that yields the score unchanged."""
    if op.name != OP or len(op.operands) != 6 or len(op.results) != 1 or indexing_maps(op) != _MAPS:
        return None
    q, k, v, scale, mask, _init = op.operands
    f32 = ir.F32Type.get()
    tensors = [q, k, v, mask, op.results[0]]
    if any(not isinstance(t.type, ir.RankedTensorType) or ir.RankedTensorType(t.type).element_type != f32 for t in tensors):
        return None
    d, e = shape(q)[2], shape(v)[2]
    if any(ir.ShapedType.is_dynamic_size(x) or x % 8 or x > MAX_D for x in (d, e)) or ir.ShapedType.is_dynamic_size(shape(q)[0]):
        return None
    block = op.regions[0].blocks[0]
    body = list(block.operations)
    if len(body) != 1 or body[0].operands[0] != block.arguments[0]:
        return None
    const = producer(scale)
    if const is None or const.name != "arith.constant" or not isinstance(const.attributes["value"], ir.FloatAttr):
        return None
    rows = _cache_row(k), _cache_row(v)
    in_place = (rows[0], rows[1]) if rows[0] is not None and rows[1] is not None else None
    return _Match(op, q, k, v, _mask_source(mask, unpad=in_place is not None), str(const.attributes["value"]), in_place)


def _dims(t: ir.RankedTensorType, name: str) -> tuple[str, list[str]]:
    """MLIR text: `tensor.dim` ops for the dynamic dims of an argument %name, and their values."""
    lines, values = [], []
    for i, size in enumerate(t.shape):
        if ir.ShapedType.is_dynamic_size(size):
            lines.append(f"%{name}_d{i} = tensor.dim %{name}, %c{i} : {t}")
            values.append(f"%{name}_d{i}")
    return "\n  ".join(lines), values


def _count(t: ir.RankedTensorType, name: str) -> tuple[str, str]:
    """MLIR text computing the element count of argument %name (static sizes folded in)."""
    static = 1
    lines, total = [], None
    for i, size in enumerate(t.shape):
        if ir.ShapedType.is_dynamic_size(size):
            lines.append(f"%{name}_d{i} = tensor.dim %{name}, %c{i} : {t}")
            if total is None:
                total = f"%{name}_d{i}"
            else:
                lines.append(f"%{name}_p{i} = arith.muli {total}, %{name}_d{i} : index")
                total = f"%{name}_p{i}"
        else:
            static *= size
    lines.append(f"%{name}_s = arith.constant {static} : index")
    if total is None:
        return "\n  ".join(lines), f"%{name}_s"
    lines.append(f"%{name}_n = arith.muli {total}, %{name}_s : index")
    return "\n  ".join(lines), f"%{name}_n"


@dataclass(frozen=True)
class Window:
    """The block-sparse pattern the kernel skips key blocks by: a query at p sees the keys
    k <= p with k < `global_` or k > p - `local` (the model's mask must be exactly that)."""

    local: int
    global_: int


DENSE = Window(0, 0)  # the kernel's `local` = 0: every key block


def _kv(m: _Match) -> tuple[ir.Value, ir.Value]:
    """The K and V tensors the dispatch takes: the caches when K and V are rows of them."""
    return (m.rows[0].cache, m.rows[1].cache) if m.rows else (m.k, m.v)


def function_name(m: _Match, window: Window = DENSE) -> str:
    k, v = _kv(m)
    types = [str(x.type) for x in (m.q, k, v, m.mask.value, m.op.results[0])]
    key = "|".join([*types, m.scale, str(m.mask.head_stride), str(m.mask.row_div), str(m.rows is not None), str(m.mask.padded)])
    if window != DENSE:
        key += f"|{window.local},{window.global_}"
    return f"iree_glm_attention_{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def definitions(m: _Match, obj: Path, window: Window = DENSE) -> str:
    """MLIR text: the executable calling the kernel and a util.func wrapper the op becomes a call of.

    The wrapper takes q, k, v and the mask source (k and v being the caches plus their rows'
    indices when they are cache rows), and runs one `flow.dispatch` of ceil(M / ROWS) x H
    workgroups, each the kernel on ROWS query rows of one head. The kernel visits N keys: K's
    (its rows' capacity C for cache rows), or the unpadded mask's N < C; their heads lie %ks
    positions apart in K and V (C for cache rows).
    """
    name = function_name(m, window)
    qt, kt, vt, mt = (ir.RankedTensorType(x.type) for x in (m.q, *_kv(m), m.mask.value))
    ot = ir.RankedTensorType(m.op.results[0].type)
    heads, d, e = qt.shape[0], qt.shape[2], vt.shape[-1]
    mask_count, mask_len = _count(mt, "mask")
    dims = {x: _dims(t, x) for x, t in (("q", qt), ("k", kt), ("v", vt), ("mask", mt))}
    qd = dims["q"][1]
    odims = "{" + ", ".join(qd) + "}" if qd else ""

    def typed(x, t):
        return f"{t}{{{', '.join(dims[x][1])}}}" if dims[x][1] else str(t)

    head_stride = "%mn" if m.mask.head_stride is None else "%hs"
    # A cache row starts row x (its H x C x D elements) x 4 bytes into the cache's binding.
    offsets = ("%krow_n = arith.muli %krow, %kn : index", "%kb = arith.muli %krow_n, %f32_bytes : index",
               "%vrow_n = arith.muli %vrow, %vn : index", "%vb = arith.muli %vrow_n, %f32_bytes : index") if m.rows else ()
    rows = ("%krow", "%vrow") if m.rows else ()
    dispatch = KernelDispatch(
        name=name, symbol=SYMBOL, grid=(Ceildiv(ROWS), heads),
        bindings=(Binding("q", "f32", "%qn"), Binding("k", "f32", "%kn", "%kb" if m.rows else "%c0"),
                  Binding("v", "f32", "%vn", "%vb" if m.rows else "%c0"),
                  Binding("mask", "f32", "%mlen"), Binding("o", "f32", "%on")),
        constants={"heads": heads, "d": d, "e": e, "rows": ROWS, "div": m.mask.row_div, "scale": m.scale,
                   "local": window.local, "global": window.global_,
                   **({} if m.mask.head_stride is None else {"hs": m.mask.head_stride}), **({"f32_bytes": 4} if m.rows else {})},
        lines=("%mn = arith.muli %m, %n : index", "%hm = arith.muli %heads, %m : index", "%hn = arith.muli %heads, %ks : index",
               "%qn = arith.muli %hm, %d : index", "%kn = arith.muli %hn, %d : index", "%vn = arith.muli %hn, %e : index",
               "%on = arith.muli %hm, %e : index", "%r0 = arith.muli %wx, %rows : index", *offsets),
        args=("%m", "%n", "%d", "%e", ("%scale", "f32"), head_stride, "%div", "%wy", "%r0", "%local", "%global", "%ks"),
        operands=("%m", "%n", "%mlen", "%ks", *rows))
    row_params = ", %krow: index, %vrow: index" if m.rows else ""
    row_operands = ", %krow, %vrow" if m.rows else ""
    row_types = ", index, index" if m.rows else ""
    return f"""
{dispatch.text(obj)}
util.func private @{name}(%q: {qt}, %k: {kt}, %v: {vt}, %mask: {mt}{row_params}) -> {ot} {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  %m = tensor.dim %q, %c1 : {qt}
  %ks = tensor.dim %k, {"%c2" if m.rows else "%c1"} : {kt}
  %n = tensor.dim {f"%mask, %c{mt.rank - 1} : {mt}" if m.mask.padded else f"%k, {'%c2' if m.rows else '%c1'} : {kt}"}
  {dims["q"][0]}
  {dims["k"][0]}
  {dims["v"][0]}
  {mask_count}
  %o = flow.dispatch @{name}_exe::@{name}[%m](%q, %k, %v, %mask, %m, %n, {mask_len}, %ks{row_operands}) : ({typed("q", qt)}, {typed("k", kt)}, {typed("v", vt)}, {typed("mask", mt)}, index, index, index, index{row_types}) -> {ot}{odims}
  util.return %o : {ot}
}}
"""


def run(module: ir.Module, kernel: Path, window: Window = DENSE) -> tuple[int, int]:
    """Replace every matching attention op by a call of the kernel's dispatch (all of them with
    the pattern `window`);
    returns how many were rewritten and how many were left to IREE (forms the kernel does not compute)."""
    ops: list[ir.Operation] = []

    def collect(op):
        if op.name == OP:
            ops.append(op.operation if hasattr(op, "operation") else op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(collect)
    defined: set[str] = set()
    done = left = 0
    for op in ops:
        m = match(op)
        if m is None:
            left += 1
            continue
        name = function_name(m, window)
        if name not in defined:
            defs = ir.Module.parse(definitions(m, kernel, window))
            for d in list(defs.body.operations):
                d.detach_from_parent()
                module.body.append(d)
            defined.add(name)
        with ir.InsertionPoint(op), op.location:
            call = ir.Operation.create(
                "util.call", results=[op.results[0].type],
                operands=[m.q, *_kv(m), m.mask.value, *([m.rows[0].index, m.rows[1].index] if m.rows else [])],
                attributes={"callee": ir.FlatSymbolRefAttr.get(name),
                            "tied_operands": ir.ArrayAttr.get([ir.IntegerAttr.get(ir.IndexType.get(), -1)])})
        op.results[0].replace_all_uses_with(call.results[0])
        op.erase()
        done += 1
    return done, left


def rewrite_file(src: Path, dst: Path, kernel: Path, window: Window = DENSE) -> tuple[int, int]:
    """Run the pass on an MLIR file (text or bytecode); returns `run`'s counts."""
    return mlir_file.rewrite(src, dst, lambda module: run(module, kernel, window))


@dataclass(frozen=True)
class AttentionKernelResult:
    rewritten: int  # attention ops that call the kernel
    left_to_iree: int  # ops of another form, lowered by IREE


@dataclass(frozen=True)
class AttentionKernelPass:
    """The pass as a build runs it (passes/pipeline.py)."""

    name: ClassVar[str] = "attention_kernel"
    window: Window = DENSE  # a block-sparse build's pattern
    kernel_set: str = X86_64_AVX2.name  # the set (kernels/toolchain.py) whose attention.c is linked

    def run(self, module: ir.Module, work: Path) -> AttentionKernelResult:
        kernel_set = toolchain.by_name(self.kernel_set)
        return AttentionKernelResult(*run(module, build_object(work, kernel_set), self.window))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m iree_glm.passes.attention_kernel", description=__doc__.splitlines()[0])
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="rewritten MLIR (the kernel's object is written beside it)")
    p.add_argument("--sparse", metavar="local=W,global=G,block=B", help="the block-sparse pattern of the module's masks (blocks outside it are skipped)")
    args = p.parse_args(argv)
    window = DENSE
    if args.sparse:
        from iree_glm.bundle.sparse_pattern import parse_pattern

        pattern = parse_pattern(args.sparse, "--sparse")
        window = Window(pattern.local, pattern.global_)
    try:
        kernel = build_object(args.output.resolve().parent)
    except KernelUnavailable as e:
        from iree_glm.errors import UserError

        raise UserError(f"attention kernel: {e}") from None
    done, left = rewrite_file(args.input, args.output, kernel, window)
    print(f"attention-kernel: rewrote {done} attention op(s), left {left} to IREE")
    return 0


if __name__ == "__main__":
    from iree_glm.errors import run_cli

    sys.exit(run_cli(main))
