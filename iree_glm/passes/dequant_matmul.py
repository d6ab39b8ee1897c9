"""Fuse weight dequantization into the matmul that consumes it: one `linalg.generic` per layer.

Exported as written, a quantized linear layer is a chain of elementwise `linalg.generic`s that
turn packed integer weights into fp32 (shifts, `sitofp`, scale multiplies), a transpose /
reshape into the matmul's [K, N] operand, and a `linalg.matmul`. IREE's stock lowering puts
the dequantization in its own dispatch that writes an fp32 copy of the weight (or hoists it to
an fp32 global at load time): decode gets slower than fp32.

This pass runs on the input-phase IR (`iree-compile --compile-to=input`). For each
`linalg.matmul` whose right operand is such a chain ending in integer leaves (parameters or
constants, possibly reshaped), it builds one `linalg.generic` that iterates over
(m, <dims of the dequantized weight in its stored order>), reads the packed leaves directly,
recomputes the dequantization in the inner loop (cloned bodies of the chain) and accumulates
x * w into an output laid out like the weight's N dims; a `tensor.collapse_shape` gives back
the [M, N] result. The weight is thus read once, as bytes, inside the matmul's dispatch.

The layout of the dequantized weight decides the loop order: quant.py stores 16 output
channels innermost ([N/16, K, 16] for int8), loops (m, n/16, k, 16). In a decode microbenchmark
(12 matmuls 1024x2816 / 2816x1024, 2 threads) this order beat (m, n/16, 16, k) by ~1.7x.
Small reduction dims that only pick elements of constants (int4's low/high nibble) are
unrolled so the shift amounts are scalars (IREE emits scalar code for constant-indexed reads).

For llvm-cpu (`cpu_tiles`), int8 decode (M=1) generics iterate (n/16, 16, k) and carry our
tile sizes: 8 tiles x 16 channels per vector step, one k per step (IREE's default, 8x8 with
8 k per step, was ~1.2x slower per layer in the 330M model's per-dispatch profile).

Integer matmuls (`int8_activations`): an int8 weight (a plain `sitofp` of one i8 leaf) can
instead be multiplied in integers. The pass then quantizes the activations per row at run time
(symmetric: s_x = max|x| / 127, q = round(x / s_x)), emits `linalg.matmul` i8 x i8 -> i32 on the
i8 weight viewed as [K, N] (a transpose of the stored bytes, no fp32 anywhere) and rescales
y = acc * s_x (the per-channel weight scale is applied after the matmul, as exported). On
llvm-cpu with data tiling this becomes IREE's s8s8s32 mmt4d ukernel (`vpmaddwd` on AVX2); the
weight is repacked i8 -> i8 once at load time. In a 128 x 1024 x 2816 probe (2 threads,
loaded, medians of 15) it ran 0.8-1.2x the f32 time and 1.3-1.7x faster than the fused
dequant generic; at 512 rows 2.4x f32 and 2.7x the fused generic. At one row it was no faster
than the tuned decode generic and adds dispatches, so "prefill" (host-cpu's default) applies it
to calls with a dynamic row count only, except the `verify` entry point's: speculative
decoding accepts a draft token only where it equals what a decode step would choose, so
verification multiplies as decode does (fp32 x, or x per block of 32 where the int8 decode
kernel runs: the export quantizes verify's rows so in the graph, build.py). Per-row activation rounding adds error (~1e-2 of a
layer's output, relative to its largest value): the profile chooses. The row quantization sits
behind an `iree_tensor_ext.compute_barrier.start`: fused into the dispatch of the norm that
produces x (two reductions and the data-tiling pack), the 330M model's dispatch needed 190 KB
of stack and failed to compile (limit 32 KB).

int4 (fp32 activations) on x86-64 with AVX2 (`kernel`: the compiled object of
passes/int4_kernel.py): the matmul becomes a call of a hand-written kernel's dispatch instead
(a matrix-vector kernel for M=1, a matrix kernel for prefill and batched decode; `verify` and
batched steps of up to BATCHED_FEW_ROWS rows the matrix-vector kernel's few-row form), one dispatch
per layer reading the packed bytes; code generation of the int4 form stayed below fp32 speed
here (see int4_kernel.py). Elsewhere int4 keeps the generic fused form.

int8 (fp32 activations) on x86-64 with AVX2 (`int8_kernel`: the object of
passes/int8_kernel.py) likewise calls hand-written kernels on the stored [N/16, K, 16] bytes:
a matrix-vector kernel for M=1 (x quantized per block of 32) and, where the matmul would be an
integer matmul (`int8_activations`, `int8_matmul`), a row quantization and a matrix kernel
computing what `rewrite_integer` does, without mmt4d's load-time repack. The weight scale stays
after the call.

bf16 weights (quant.pack_bf16's [N/16, K2, 16, 2], widened by `extf`: `compile --compute-dtype
bf16` on AMX-BF16 targets, `bf16_kernel`) call the bf16 kernels (kernels/bf16.py): the
matrix-vector kernel for one row and for verify's rows, the conversion and tile kernels for
prompts. Without the kernel object they take the generic fused form like any other chain.

Not handled (left unfused, so the build's fused-count check fails loudly): `linalg.batch_matmul`
and matmuls with transposed / broadcast indexing maps; our exporter does not produce them for
linear layers.

Use: `run(module) -> list of rewritten matmul locations`, or
`python -m iree_glm.passes.dequant_matmul IN.mlir -o OUT.mlir [--cpu-tiles] [--int4-kernel] [--int8-kernel]`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Optional, Sequence

from iree.compiler import ir
from iree.compiler.dialects import linalg, tensor

from iree_glm.bundle.manifest import BATCHED_DECODE, INT8_ACTIVATIONS, VERIFY
from iree_glm.passes import mlir_file
from iree_glm.passes.matching import enclosing_function, producer, shape, use_count, zero_fill

if TYPE_CHECKING:
    from iree_glm.kernels.toolchain import KernelObject

# Batched decode steps of up to this many rows call the few-row kernels (as `verify` does)
# rather than the prompt path's quantization + matrix kernels: on a 24-layer 330M int4 model
# (AMD Zen 3, tools/bench_batched_decode.py) 1.9x / 1.5x faster steps at 2 / 4 rows, 0.97x at 8,
# where the matrix kernels' better use of each weight block catches up.
BATCHED_FEW_ROWS = 4

# A map from the dequantized weight's dims (D dims) to an operand's dims: for each operand
# dim, the D dim that indexes it, or None for a constant 0 (a broadcast unit dim).
DimMap = list[Optional[int]]

_RESHAPES = ("tensor.expand_shape", "tensor.collapse_shape")
_LEAF_ROOTS = ("util.global.load", "arith.constant")


@dataclass
class _Leaf:
    value: ir.Value
    dims: DimMap


@dataclass
class _Match:
    matmul: ir.Operation
    lhs: ir.Value
    init: ir.Value
    generics: list[ir.Operation]  # dequant chain, producers before consumers
    leaves: list[_Leaf]
    d_shape: list[int]
    k_dims: list[int]  # D dims forming the matmul's K, in row-major order
    n_dims: list[int]  # D dims forming the matmul's N, in row-major order
    dead: list[ir.Operation] = field(default_factory=list)  # view ops to erase, consumers first


def _dim_map(affine_map: ir.AffineMap) -> Optional[list[Optional[int]]]:
    """Results of a projected permutation with constant-0 broadcasts as dim indices / None."""
    out: list[Optional[int]] = []
    for e in affine_map.results:
        if isinstance(e, ir.AffineDimExpr):
            out.append(e.position)
        elif isinstance(e, ir.AffineConstantExpr) and e.value == 0:
            out.append(None)
        else:
            return None
    return out


def _elementwise(op: ir.Operation) -> bool:
    """A linalg.generic computing one output elementwise from its inputs (no index, no reads of out)."""
    if op.name != "linalg.generic" or len(op.results) != 1:
        return False
    g = op.opview
    if len(g.outputs) != 1 or any(str(t) != '#linalg.iterator_type<parallel>' for t in g.iterator_types):
        return False
    maps = [ir.AffineMapAttr(a).value for a in g.indexing_maps]
    if maps[-1] != ir.AffineMap.get_identity(maps[-1].n_dims):
        return False
    if any(_dim_map(m) is None for m in maps[:-1]):
        return False
    block = g.region.blocks[0]
    if len(list(block.arguments[-1].uses)):
        return False
    return all(o.name not in ("linalg.index", "tensor.extract") for o in block.operations)


def _weight_leaf(value: ir.Value) -> bool:
    """A parameter or constant, possibly reshaped: something known before any input arrives."""
    while True:
        op = producer(value)
        if op is None:
            return False
        if op.name in _LEAF_ROOTS:
            return True
        if op.name not in _RESHAPES:
            return False
        value = op.operands[0]


def _strip_unit_expand(leaf: _Leaf) -> _Leaf:
    """expand_shape that only adds unit dims: index its source directly (cleaner maps for IREE)."""
    while True:
        op = producer(leaf.value)
        if op is None or op.name != "tensor.expand_shape":
            return leaf
        sizes = shape(op.results[0])
        groups = _groups_of(op.attributes["reassociation"])
        dims: DimMap = []
        for group in groups:
            big = [r for r in group if sizes[r] != 1]
            if len(big) > 1:
                return leaf
            if big:
                dims.append(leaf.dims[big[0]])
            else:
                dims.append(None)
        leaf = _Leaf(op.operands[0], dims)


def _view_groups(rhs: ir.Value) -> Optional[tuple[ir.Value, list[list[int]], list[ir.Operation]]]:
    """Walk back from the matmul's RHS through transposes and reshapes.

    Returns (D value, for each RHS dim the D dims it is made of in row-major order, the view
    ops passed), or None if something other than a pure re-view sits in between.
    """
    ops: list[ir.Operation] = []
    value = rhs
    while True:
        op = producer(value)
        if op is None or op.name not in ("linalg.transpose", *_RESHAPES):
            break
        if not use_count(value) == 1:
            return None
        ops.append(op)
        value = op.operands[0]
    d_shape = shape(value)
    groups = [[d] for d in range(len(d_shape))]
    for op in reversed(ops):  # replay the views forwards on groups of D dims
        if op.name == "linalg.transpose":
            groups = [groups[p] for p in ir.DenseI64ArrayAttr(op.attributes["permutation"])]
            continue
        reassoc = _groups_of(op.attributes["reassociation"])
        if op.name == "tensor.collapse_shape":
            groups = [sum((groups[i] for i in g), []) for g in reassoc]
            continue
        out_shape = shape(op.results[0])
        split: list[list[int]] = []
        for src, g in enumerate(reassoc):  # expand: split each group at D-dim boundaries
            dims = list(groups[src])
            for r in g:
                take, size = [], 1
                while dims and size < out_shape[r]:
                    take.append(dims.pop(0))
                    size *= d_shape[take[-1]]
                if size != out_shape[r]:
                    return None
                split.append(take)
            if dims:
                return None
        groups = split
    return value, groups, ops


def _groups_of(attr: ir.Attribute) -> list[list[int]]:
    return [[ir.IntegerAttr(i).value for i in ir.ArrayAttr(g)] for g in ir.ArrayAttr(attr)]


def _dequant_region(root: ir.Operation) -> Optional[tuple[list[ir.Operation], list[_Leaf]]]:
    """The elementwise generics computing the weight from integer leaves, and those leaves."""
    generics: list[ir.Operation] = []
    leaves: list[_Leaf] = []

    def visit(op: ir.Operation, to_d: DimMap) -> bool:
        g = op.opview
        maps = [_dim_map(ir.AffineMapAttr(a).value) for a in g.indexing_maps]
        for operand, m in zip(g.inputs, maps):
            dims = [to_d[e] if e is not None else None for e in m]
            prod = producer(operand)
            if prod is not None and _elementwise(prod) and use_count(operand) == 1 and prod.name == "linalg.generic":
                if not visit(prod, dims):
                    return False
            elif _weight_leaf(operand):
                leaves.append(_strip_unit_expand(_Leaf(operand, dims)))
            else:
                return False
        generics.append(op)
        return True

    rank = len(shape(root.results[0]))
    if not visit(root, list(range(rank))):
        return None
    elements = [ir.RankedTensorType(l.value.type).element_type for l in leaves]
    ops = {o.name for g in generics for o in g.opview.region.blocks[0].operations}
    integer = any(isinstance(e, ir.IntegerType) for e in elements) and ops & {"arith.sitofp", "arith.uitofp"}
    widened = any(isinstance(e, ir.BF16Type) for e in elements) and "arith.extf" in ops  # bf16 weights (quant.pack_bf16)
    if not (integer or widened):
        return None
    return generics, leaves


def _plain_matmul_maps(matmul: ir.Operation) -> bool:
    """linalg.matmul without transposed / broadcast operands (its indexing_maps, if any, are the defaults)."""
    if "indexing_maps" not in matmul.attributes:
        return True
    maps = [str(ir.AffineMapAttr(a).value) for a in ir.ArrayAttr(matmul.attributes["indexing_maps"])]
    return maps == ["(d0, d1, d2) -> (d0, d2)", "(d0, d1, d2) -> (d2, d1)", "(d0, d1, d2) -> (d0, d1)"]


def match(matmul: ir.Operation) -> Optional[_Match]:
    """Recognise dequantize -> view -> linalg.matmul(x, W[K, N])."""
    if matmul.name != "linalg.matmul" or not _plain_matmul_maps(matmul):
        return None
    mm = matmul.opview
    lhs, rhs = mm.inputs
    viewed = _view_groups(rhs)
    if viewed is None:
        return None
    d_value, groups, view_ops = viewed
    root = producer(d_value)
    if root is None or not _elementwise(root) or not use_count(d_value) == 1:
        return None
    region = _dequant_region(root)
    if region is None or len(groups) != 2 or not all(groups):
        return None
    generics, leaves = region
    return _Match(matmul, lhs, mm.outputs[0], generics, leaves, shape(d_value), groups[0], groups[1], view_ops)


def _reassociation(groups: Sequence[Sequence[int]]) -> ir.ArrayAttr:
    i64 = ir.IntegerType.get_signless(64)
    return ir.ArrayAttr.get([ir.ArrayAttr.get([ir.IntegerAttr.get(i64, i) for i in g]) for g in groups])


def _clone_body(src: ir.Block, args: list[ir.Value]) -> ir.Value:
    """Clone a generic's body at the current insertion point with its input args replaced."""
    mapping: list[tuple[ir.Value, ir.Value]] = list(zip(src.arguments, args))
    result = None
    for op in src.operations:
        if op.name == "linalg.yield":
            result = _lookup(mapping, op.operands[0])
            break
        new = op.clone()
        for i, operand in enumerate(new.operands):
            hit = _lookup(mapping, operand, None)
            if hit is not None:
                new.operands[i] = hit
        mapping.extend(zip(op.results, new.results))
    assert result is not None
    return result


_MISSING = object()


def _lookup(mapping, value, default=_MISSING):
    for old, new in mapping:
        if old == value:
            return new
    if default is _MISSING:
        return value
    return default


_UNROLL_MAX = 4  # reduction dims up to this size that only pick constants are unrolled


def _constant(value: ir.Value) -> Optional[ir.Attribute]:
    op = producer(value)
    if op is None or op.name != "arith.constant":
        return None
    attr = op.attributes["value"]
    return attr if isinstance(attr, (ir.DenseIntElementsAttr, ir.DenseFPElementsAttr)) else None


def _unrolled_dims(m: _Match) -> list[int]:
    """Small reduction dims that only select elements of 1-d constant leaves.

    The int4 nibble index is one: it picks the shift amount from a [0, 4] constant. Indexing a
    constant by a loop dim (or with a constant map) makes IREE emit scalar code, so the dim is
    unrolled instead: one copy of the dequant body per value, with the constants as scalars.
    """
    out = []
    for d in m.k_dims:
        users = [l for l in m.leaves if d in l.dims]
        if m.d_shape[d] <= _UNROLL_MAX and users and all(_constant(l.value) is not None and _only_dim(l) == d for l in users):
            out.append(d)
    return out


def _only_dim(leaf: _Leaf) -> Optional[int]:
    """The one loop dim indexing `leaf` when its other dims are unit broadcasts (a 1-d table)."""
    dims = [d for d in leaf.dims if d is not None]
    units = all(size == 1 for size, d in zip(shape(leaf.value), leaf.dims) if d is None)
    return dims[0] if len(dims) == 1 and units else None


def _scalar(leaf: _Leaf, at: dict[int, int]) -> Optional[ir.Attribute]:
    """The leaf's element for unrolled-dim values `at`, if the leaf is a constant that reduces to one."""
    attr = _constant(leaf.value)
    if attr is None:
        return None
    if attr.is_splat:
        return attr.get_splat_value()
    d = _only_dim(leaf)
    if d in at:  # other dims are units: the flat index is the value of d
        elem = ir.RankedTensorType(leaf.value.type).element_type
        v = attr[at[d]]
        return ir.IntegerAttr.get(elem, int(v)) if isinstance(elem, ir.IntegerType) else ir.FloatAttr.get(elem, float(v))
    return None


def rewrite(m: _Match, cpu_tiles: bool = False) -> ir.Operation:
    """Replace the matched matmul by one fused generic (plus free reshapes); returns the generic.

    With `cpu_tiles`, an int8 matmul with a static M of 1 (decode) becomes a generic without the
    M loop iterating (N dims, K dims), the order IREE's CPU backend would pick anyway, so that
    our tile sizes (`_decode_cpu_config`) reach the dispatch unchanged.
    """
    from iree.compiler.dialects import arith

    f32 = ir.RankedTensorType(m.init.type).element_type
    lhs_t = ir.RankedTensorType(m.lhs.type)
    m_size = lhs_t.shape[0]
    dyn = ir.ShapedType.get_dynamic_size()
    k_sizes = [m.d_shape[d] for d in m.k_dims]
    n_sizes = [m.d_shape[d] for d in m.n_dims]
    unrolled = _unrolled_dims(m)
    kept = [d for d in range(len(m.d_shape)) if d not in unrolled]  # D dims left as loop dims
    combos: list[dict[int, int]] = [{}]
    for d in unrolled:
        combos = [{**c, d: v} for c in combos for v in range(m.d_shape[d])]
    tensor_leaves = [l for l in m.leaves if _scalar(l, combos[0]) is None]
    # The tuned decode form: M=1 on llvm-cpu with the int8 layout (one K dim, tile and lane N
    # dims); its loops are N dims then K dims. Elsewhere the loops are (M, D dims in stored
    # order): int4's decode became 2x slower without the M loop (IREE picks other tiles).
    decode = cpu_tiles and m_size == 1 and not unrolled and len(m.k_dims) == 1 and len(m.n_dims) == 2
    loops = [*m.n_dims, *m.k_dims] if decode else kept
    with ir.InsertionPoint(m.matmul), m.matmul.location:
        dyn_sizes = []
        if m_size == dyn:
            zero = arith.ConstantOp(ir.IndexType.get(), 0).result
            dyn_sizes = [tensor.DimOp(m.lhs, zero).result]
        x = m.lhs
        if len(k_sizes) > 1:
            x = tensor.ExpandShapeOp(
                ir.RankedTensorType.get([m_size, *k_sizes], lhs_t.element_type), m.lhs,
                _reassociation([[0], list(range(1, 1 + len(k_sizes)))]), dyn_sizes, [m_size, *k_sizes],
            ).result
        xs = [x] if not unrolled else [_slice(x, m.k_dims, c, dyn_sizes) for c in combos]
        init = m.init
        out_t = ir.RankedTensorType.get([m_size, *n_sizes], f32)
        if len(n_sizes) > 1:
            init = tensor.ExpandShapeOp(
                out_t, m.init, _reassociation([[0], list(range(1, 1 + len(n_sizes)))]), dyn_sizes, [m_size, *n_sizes]
            ).result
        if decode:  # drop the unit M dim of x and of the output
            xs = [_drop_unit_lead(v) for v in xs]
            init = _drop_unit_lead(init)
            out_t = ir.RankedTensorType(init.type)
        lead = 0 if decode else 1
        rank = lead + len(loops)

        def amap(dims: Sequence[Optional[int]], with_m: bool = False) -> ir.AffineMapAttr:
            exprs = [ir.AffineDimExpr.get(0)] if with_m and not decode else []
            exprs += [ir.AffineDimExpr.get(lead + loops.index(d)) if d is not None else ir.AffineConstantExpr.get(0) for d in dims]
            return ir.AffineMapAttr.get(ir.AffineMap.get(rank, 0, exprs))

        x_dims = [d for d in m.k_dims if d in kept]
        maps = [amap(x_dims, True)] * len(xs) + [amap(l.dims) for l in tensor_leaves] + [amap(m.n_dims, True)]
        par, red = ir.Attribute.parse("#linalg.iterator_type<parallel>"), ir.Attribute.parse("#linalg.iterator_type<reduction>")
        iters = ([] if decode else [par]) + [red if d in m.k_dims else par for d in loops]
        fused = linalg.GenericOp([out_t], [*xs, *[l.value for l in tensor_leaves]], [init], ir.ArrayAttr.get(maps), ir.ArrayAttr.get(iters))
        if decode:
            fused.operation.attributes["compilation_info"] = _decode_cpu_config(m)
        arg_types = [lhs_t.element_type] * len(xs) + [ir.RankedTensorType(l.value.type).element_type for l in tensor_leaves] + [f32]
        block = fused.regions[0].blocks.append(*arg_types)
        with ir.InsertionPoint(block):
            leaf_args = dict(zip(map(id, tensor_leaves), block.arguments[len(xs):-1]))
            total = None
            for x_arg, at in zip(block.arguments[: len(xs)], combos):
                leaves = []
                for l in m.leaves:
                    value = _scalar(l, at)
                    leaves.append(leaf_args[id(l)] if value is None else arith.ConstantOp(value.type, value).result)
                prod = arith.MulFOp(x_arg, _inline_chain(m, leaves)).result
                total = prod if total is None else arith.AddFOp(total, prod).result
            linalg.YieldOp([arith.AddFOp(block.arguments[-1], total).result])
        result = fused.results[0]
        if decode:
            result = tensor.ExpandShapeOp(
                ir.RankedTensorType.get([1, *n_sizes], f32), result, _reassociation([[0, 1], *[[i] for i in range(2, 1 + len(n_sizes))]]), [], [1, *n_sizes]
            ).result
        if len(n_sizes) > 1:
            result = tensor.CollapseShapeOp(m.matmul.results[0].type, result, _reassociation([[0], list(range(1, 1 + len(n_sizes)))])).result
    _replace_matched(m, result)
    return fused.operation


def _replace_matched(m: _Match, result: ir.Value) -> None:
    """Uses of the matmul take `result`; the matmul and its now unused dequant chain go."""
    m.matmul.results[0].replace_all_uses_with(result)
    m.matmul.erase()
    for op in [*m.dead, *reversed(m.generics)]:
        if all(not list(r.uses) for r in op.results):
            op.erase()


def _integer_weight(m: _Match) -> Optional[ir.Value]:
    """The i8 leaf if the dequantization is a plain `sitofp` of it in stored order (int8), else None."""
    if len(m.generics) != 1 or len(m.leaves) != 1:
        return None
    leaf = m.leaves[0]
    elem = ir.RankedTensorType(leaf.value.type).element_type
    if not (isinstance(elem, ir.IntegerType) and elem.width == 8) or leaf.dims != list(range(len(m.d_shape))):
        return None
    if shape(leaf.value) != m.d_shape:
        return None
    body = [o.name for o in m.generics[0].opview.region.blocks[0].operations]
    return leaf.value if body == ["arith.sitofp", "linalg.yield"] else None


_PAR, _RED = "#linalg.iterator_type<parallel>", "#linalg.iterator_type<reduction>"


def _generic(out_type: ir.Type, ins: list[ir.Value], init: ir.Value, maps: list[str], iters: list[str], body) -> ir.Value:
    """A linalg.generic with affine maps given as text; `body(block args) -> yielded value`."""
    op = linalg.GenericOp([out_type], ins, [init], ir.ArrayAttr.get([ir.Attribute.parse(f"affine_map<{t}>") for t in maps]),
                          ir.ArrayAttr.get([ir.Attribute.parse(t) for t in iters]))
    types = [ir.RankedTensorType(v.type).element_type for v in [*ins, init]]
    block = op.regions[0].blocks.append(*types)
    with ir.InsertionPoint(block):
        linalg.YieldOp([body(*block.arguments)])
    return op.results[0]


def rewrite_integer(m: _Match, q_weight: ir.Value) -> None:
    """Replace the matched matmul by: per-row int8 activations, i8 x i8 -> i32 matmul, rescale.

    y[m, n] = init[m, n] + acc[m, n] * max|x[m, :]| / 127, with acc the integer product of
    q[m, k] = round(x[m, k] * 127 / max|x[m, :]|) and `q_weight` (the stored i8 leaf,
    `_integer_weight`) viewed as [K, N].
    """
    from iree.compiler.dialects import arith, math

    f32 = ir.F32Type.get()
    i8, i32 = ir.IntegerType.get_signless(8), ir.IntegerType.get_signless(32)
    lhs_t = ir.RankedTensorType(m.lhs.type)
    rows, k = lhs_t.shape
    n = ir.RankedTensorType(m.init.type).shape[1]
    dyn = ir.ShapedType.get_dynamic_size()
    with ir.InsertionPoint(m.matmul), m.matmul.location:
        row_sizes = [tensor.DimOp(m.lhs, arith.ConstantOp(ir.IndexType.get(), 0).result).result] if rows == dyn else []

        def empty(shape, elem):  # a dynamic row count is given as the row size value
            return tensor.EmptyOp([row_sizes[0] if s == dyn else s for s in shape], elem).result

        def const(t, v):
            return arith.ConstantOp(t, v).result

        # The row quantization gets a dispatch of its own (see the module doc: stack limit).
        x = ir.Operation.create("iree_tensor_ext.compute_barrier.start", results=[m.lhs.type], operands=[m.lhs, *row_sizes]).result
        zero = linalg.fill(const(f32, 0.0), outs=[empty([rows], f32)])
        amax = _generic(ir.RankedTensorType.get([rows], f32), [x], zero, ["(m, k) -> (m, k)", "(m, k) -> (m)"], [_PAR, _RED],
                        lambda x, acc: arith.MaximumFOp(acc, math.AbsFOp(x).result).result)

        def quantize(x, a, _out):
            inv = arith.DivFOp(const(f32, 127.0), arith.MaximumFOp(a, const(f32, 1e-30)).result).result
            return arith.FPToSIOp(i8, math.RoundEvenOp(arith.MulFOp(x, inv).result).result).result

        q_x = _generic(ir.RankedTensorType.get([rows, k], i8), [x, amax], empty([rows, k], i8),
                       ["(m, k) -> (m, k)", "(m, k) -> (m)", "(m, k) -> (m, k)"], [_PAR, _PAR], quantize)
        # The stored weight (D dims) as [K, N]: K dims first, then N dims, collapsed.
        perm = [*m.k_dims, *m.n_dims]
        w = q_weight
        if perm != list(range(len(perm))):
            w = linalg.transpose(w, outs=[tensor.EmptyOp([m.d_shape[d] for d in perm], i8).result], permutation=perm)
        if len(perm) > 2:
            w = tensor.CollapseShapeOp(ir.RankedTensorType.get([k, n], i8), w,
                                       _reassociation([list(range(len(m.k_dims))), list(range(len(m.k_dims), len(perm)))])).result
        acc = linalg.matmul(q_x, w, outs=[linalg.fill(const(i32, 0), outs=[empty([rows, n], i32)])])

        def rescale(a, am, init, _out):
            return arith.AddFOp(init, arith.MulFOp(arith.SIToFPOp(f32, a).result, arith.DivFOp(am, const(f32, 127.0)).result).result).result

        result = _generic(m.matmul.results[0].type, [acc, amax, m.init], empty([rows, n], f32),
                          ["(m, n) -> (m, n)", "(m, n) -> (m)", "(m, n) -> (m, n)", "(m, n) -> (m, n)"], [_PAR, _PAR], rescale)
    _replace_matched(m, result)


def _drop_unit_lead(value: ir.Value) -> ir.Value:
    """[1, d1, d2, ...] -> [d1, d2, ...] (a free reshape)."""
    t = ir.RankedTensorType(value.type)
    groups = [[0, 1], *[[i] for i in range(2, t.rank)]]
    return tensor.CollapseShapeOp(ir.RankedTensorType.get(t.shape[1:], t.element_type), value, _reassociation(groups)).result


# Decode tiles for IREE's CPU backend, measured on an AVX2 EPYC under load (min times): per
# workgroup 16 tiles of 16 output channels, vectors of 8 tiles x 16 channels, one k per step
# (a broadcast x element, FMAs into 8x16 accumulators). IREE's default (8x8, 8 k per step,
# half tiles per load) was 1.37x slower in a 16-pair 1024x2816 up/down microbenchmark and
# ~1.2x slower per layer in the 330M model's per-dispatch profile (the head 1.08x).
_DECODE_TILES = {"workgroup_tiles": 16, "vector_tiles": 8}


def _decode_cpu_config(m: _Match) -> ir.Attribute:
    """compilation_info for the int8 decode form (loops: tile, channel in tile, K)."""
    tiles, lanes = m.d_shape[m.n_dims[0]], m.d_shape[m.n_dims[1]]
    vec = next(v for v in (_DECODE_TILES["vector_tiles"], 4, 2, 1) if tiles % v == 0)
    wg = _DECODE_TILES["workgroup_tiles"] if tiles % _DECODE_TILES["workgroup_tiles"] == 0 else vec
    return ir.Attribute.parse(
        "#iree_codegen.compilation_info<lowering_config = #iree_cpu.lowering_config<"
        f"distribution = [{wg}, {lanes}, 0], vector_common_parallel = [{vec}, {lanes}, 0], vector_reduction = [0, 0, 1]>, "
        "translation_info = #iree_codegen.translation_info<pipeline = #iree_cpu.pipeline<DoubleTilingExpert>>>"
    )


def _slice(x: ir.Value, k_dims: list[int], at: dict[int, int], dyn_sizes: list[ir.Value]) -> ir.Value:
    """x [M, *K dims] at the unrolled dims' values `at`, those dims dropped (rank-reducing slice)."""
    t = ir.RankedTensorType(x.type)
    shape = list(t.shape)
    offsets = [0] + [at.get(d, 0) for d in k_dims]
    sizes = [shape[0]] + [1 if d in at else shape[1 + i] for i, d in enumerate(k_dims)]
    result_t = ir.RankedTensorType.get([shape[0]] + [s for i, s in enumerate(shape[1:]) if k_dims[i] not in at], t.element_type)
    return tensor.ExtractSliceOp(result_t, x, [], dyn_sizes, [], offsets, sizes, [1] * len(shape)).result


def _inline_chain(m: _Match, leaf_args: list[ir.Value]) -> ir.Value:
    """Clone the dequant generics' bodies; leaves are handed out in `_dequant_region`'s visit order."""
    leaf_iter = iter(leaf_args)

    def emit(op: ir.Operation) -> ir.Value:
        args = []
        for operand in op.opview.inputs:
            prod = producer(operand)
            if prod is not None and any(prod == g for g in m.generics):
                args.append(emit(prod))
            else:
                args.append(next(leaf_iter))
        return _clone_body(op.opview.region.blocks[0], args)

    return emit(m.generics[-1])


_INT4_BODY = {"arith.shrsi", "arith.andi", "arith.subi", "arith.sitofp", "arith.extf", "arith.mulf"}


def _int4_layout(m: _Match) -> Optional[tuple[Optional[int], int, int, int, ir.Value, ir.Value]]:
    """(M or None if dynamic, K, N, G, qweight, scale) if `m` is quant.py's int4 layout.

    x [M, K] f32 into a zero-filled [M, N] f32. The weight: D = [N, K/G, 2, G/2] from
    qweight i8 [N, K/G, G/2] shifted right by [0, 4] along the nibble dim, masked with 15,
    minus 8, converted and multiplied by scale f16 [N, K/G] widened to f32 (nothing else).
    """
    f32 = ir.F32Type.get()
    lhs_t = ir.RankedTensorType(m.lhs.type)
    if lhs_t.element_type != f32 or ir.RankedTensorType(m.init.type).element_type != f32:
        return None
    if len(m.d_shape) != 4 or m.n_dims != [0] or m.k_dims != [1, 2, 3] or m.d_shape[2] != 2 or _unrolled_dims(m) != [2]:
        return None
    if not zero_fill(m.init):
        return None
    ops = {o.name for g in m.generics for o in g.opview.region.blocks[0].operations} - {"linalg.yield"}
    if ops != _INT4_BODY:
        return None
    tables = [l for l in m.leaves if _scalar(l, {2: 0}) is not None]
    if sorted(int(str(_scalar(l, {2: 0})).split(":")[0]) for l in tables) != [0, 8, 15] or \
            sorted(int(str(_scalar(l, {2: 1})).split(":")[0]) for l in tables) != [4, 8, 15]:
        return None
    tensors = [l for l in m.leaves if l not in tables]
    n, gn, _, half = m.d_shape
    q = [l for l in tensors if l.dims == [0, 1, 3] and shape(l.value) == [n, gn, half]
         and ir.RankedTensorType(l.value.type).element_type == ir.IntegerType.get_signless(8)]
    s = [l for l in tensors if l.dims == [0, 1] and shape(l.value) == [n, gn] and ir.RankedTensorType(l.value.type).element_type == ir.F16Type.get()]
    if len(tensors) != 2 or len(q) != 1 or len(s) != 1:
        return None
    rows = None if lhs_t.is_dynamic_dim(0) else lhs_t.shape[0]
    return rows, gn * 2 * half, n, 2 * half, q[0].value, s[0].value


def _call_int4_kernel(m: _Match, kernel: KernelObject, defined: set[str], glue: Optional[dict[str, int]] = None,
                      verify: bool = False) -> Optional[ir.Operation]:
    """Replace an int4 matmul by a call of the kernel's dispatch (see int4_kernel.py); with
    `glue` (counts by kind), the quantization of a prompt's rows computes x from the step that
    produces it where quantize_glue matches one. `verify`: the few-row matrix-vector kernel
    (every row as a decode step computes it; one row: the decode kernel itself, chosen inside
    the dispatch)."""
    from iree_glm.kernels import int4 as int4_kernel

    found = _int4_layout(m)
    if found is None:
        return None
    rows, k, n, group, qweight, scale = found
    if verify and int4_kernel.fits(k, group, 1):
        return _call_kernel(m, int4_kernel.verify_name(k, n, group), lambda: int4_kernel.definitions(k, n, group, kernel, None, verify=True),
                            [m.lhs, qweight, scale], defined, dynamic_rows=True)
    if not int4_kernel.fits(k, group, rows):
        _kernel_not_used(m, f"int4 K={k} group {group} rows {rows or 'dynamic'}", f"groups multiples of {int4_kernel.BLOCK}, K <= {int4_kernel.MAX_K} for one row, groups <= {int4_kernel.MATMUL_MAX_GROUP} for several")
        return None
    name = int4_kernel.function_name(k, n, group, rows)
    found = _glue(m, k, rows, glue, scaled=False)
    if found is not None:
        return _call_kernel(m, name + found.glue.suffix(), lambda: int4_kernel.definitions(k, n, group, kernel, rows, found.glue),
                            [*found.operands, qweight, scale], defined)
    return _call_kernel(m, name, lambda: int4_kernel.definitions(k, n, group, kernel, rows), [m.lhs, qweight, scale], defined)


def _glue(m: _Match, k: int, rows: Optional[int], counts: Optional[dict[str, int]], scaled: bool):
    """quantize_glue's match for a kernel matmul's x (prompts, batched decode: rows != 1), counted
    in `counts` by kind ("none": the plain quantization); None without `counts`."""
    from iree_glm.kernels import int4 as int4_kernel
    from iree_glm.passes import quantize_glue

    if counts is None or rows == 1:
        return None
    found = quantize_glue.match(m.lhs, scaled) if k <= int4_kernel.GLUE_MAX_K else None
    kind = found.glue.kind if found else "none"
    counts[kind] = counts.get(kind, 0) + 1
    return found


class KernelNotUsed(UserWarning):
    """A matmul the AVX2 kernels were offered for keeps the generated form (its shape is outside their range)."""


def _kernel_not_used(m: _Match, what: str, range_: str) -> None:
    warnings.warn(f"{m.matmul.location}: {what} is outside the AVX2 kernel's range ({range_}): generic fused form", KernelNotUsed)


def _call_kernel(m: _Match, name: str, definitions, operands: list[ir.Value], defined: set[str], dynamic_rows: bool = False) -> ir.Operation:
    """Replace the matched matmul by `util.call @name(operands)`; the kernel's executables and
    wrapper (`definitions()`, MLIR text) are added to the module once (`defined`: symbols added).
    `dynamic_rows`: the callee takes any row count (the few-row kernels), so a static one (a
    batched decode step's) is cast to it and back."""
    module = m.matmul.parent
    while module.name != "builtin.module":
        module = module.parent
    if name not in defined:
        defs = ir.Module.parse(definitions())
        body = module.regions[0].blocks[0]
        for op in list(defs.body.operations):  # layers with the same K share the quantization dispatch
            symbol = ir.StringAttr(op.attributes["sym_name"]).value
            if symbol not in defined:
                op.detach_from_parent()
                body.append(op)
                defined.add(symbol)
    result_type = ir.RankedTensorType(m.matmul.results[0].type)
    dynamic = ir.ShapedType.get_dynamic_size()
    cast = dynamic_rows and not result_type.is_dynamic_dim(0)  # a static row count into the verify kernels' ? rows
    with ir.InsertionPoint(m.matmul), m.matmul.location:
        if cast:
            x_type = ir.RankedTensorType(operands[0].type)
            x_dynamic = ir.RankedTensorType.get([dynamic, *x_type.shape[1:]], x_type.element_type)
            operands = [tensor.CastOp(x_dynamic, operands[0]).result, *operands[1:]]
            call_type = ir.RankedTensorType.get([dynamic, *result_type.shape[1:]], result_type.element_type)
        else:
            call_type = result_type
        call = ir.Operation.create(
            "util.call", results=[call_type], operands=operands,
            attributes={"callee": ir.FlatSymbolRefAttr.get(name),
                        "tied_operands": ir.ArrayAttr.get([ir.IntegerAttr.get(ir.IndexType.get(), -1)])})
        result = tensor.CastOp(result_type, call.results[0]).result if cast else call.results[0]
    _replace_matched(m, result)
    return call


def _call_int8_kernel(m: _Match, q_weight: ir.Value, kernel: KernelObject, defined: set[str], integer: bool,
                      glue: Optional[dict[str, int]] = None, verify: bool = False) -> Optional[ir.Operation]:
    """Replace an int8 matmul (x [M, K] f32, weight quant.py's [N/16, K, 16] i8 with a plain
    `sitofp`, zero-filled f32 output) by a call of the kernels' dispatches (int8_kernel.py): the
    matrix-vector kernel for M=1; for other M, if `integer` (the matmul multiplies per-row int8
    activations, as `rewrite_integer` would), the quantization and matrix kernels (with `glue`:
    as `_call_int4_kernel`'s); `verify`: the few-row matrix-vector kernel (every row as a decode
    step computes it)."""
    from iree_glm.kernels import int8 as int8_kernel

    f32 = ir.F32Type.get()
    lhs_t = ir.RankedTensorType(m.lhs.type)
    if lhs_t.element_type != f32 or ir.RankedTensorType(m.init.type).element_type != f32 or not zero_fill(m.init):
        return None
    if m.k_dims != [1] or m.n_dims != [0, 2]:
        return None
    tiles, k, lanes = m.d_shape
    rows = None if lhs_t.is_dynamic_dim(0) else lhs_t.shape[0]
    rows_form = verify and int8_kernel.fits(k, lanes, 1)
    if rows_form:
        name, defs = int8_kernel.verify_name(k, tiles * lanes), lambda: int8_kernel.definitions(k, tiles, kernel, verify=True)
    elif int8_kernel.fits(k, lanes, rows):
        name, defs = int8_kernel.function_name(k, tiles * lanes), lambda: int8_kernel.definitions(k, tiles, kernel)
    elif rows != 1 and integer and int8_kernel.matmul_fits(k, lanes):
        name, defs = int8_kernel.function_name(k, tiles * lanes, rows), lambda: int8_kernel.matmul_definitions(k, tiles, kernel, rows)
        found = _glue(m, k, rows, glue, scaled=True)
        if found is not None:
            return _call_kernel(m, name + found.glue.suffix(), lambda: int8_kernel.matmul_definitions(k, tiles, kernel, rows, found.glue),
                                [*found.operands, q_weight], defined)
    else:
        if rows == 1 or integer:  # the kernel was meant for this matmul (else: weight-only prompts, by choice)
            _kernel_not_used(m, f"int8 K={k} rows {rows or 'dynamic'}", f"K a multiple of {int8_kernel.BLOCK}, <= {int8_kernel.MAX_K} for one row")
        return None
    return _call_kernel(m, name, defs, [m.lhs, q_weight], defined, dynamic_rows=rows_form)




def _bf16_weight(m: _Match) -> Optional[ir.Value]:
    """The bf16 leaf if the weight is quant.pack_bf16's layout [N/16, K2, 16, 2] widened by a
    plain `extf` (K from dims 1 and 3, N from dims 0 and 2), else None."""
    if len(m.generics) != 1 or len(m.leaves) != 1 or m.k_dims != [1, 3] or m.n_dims != [0, 2]:
        return None
    leaf = m.leaves[0]
    if not isinstance(ir.RankedTensorType(leaf.value.type).element_type, ir.BF16Type) or leaf.dims != [0, 1, 2, 3]:
        return None
    body = [o.name for o in m.generics[0].opview.region.blocks[0].operations]
    return leaf.value if body == ["arith.extf", "linalg.yield"] and shape(leaf.value) == m.d_shape else None


def _call_bf16_kernel(m: _Match, weight: ir.Value, kernel: KernelObject, defined: set[str], verify: bool) -> Optional[ir.Operation]:
    """Replace a bf16-weight matmul (x [M, K] f32, zero-filled f32 output) by a call of the bf16
    kernels (kernels/bf16.py): the matrix-vector kernel for one row and for `verify`'s rows
    (each as a decode step computes it), else the conversion and tile kernels."""
    from iree_glm.kernels import bf16

    f32 = ir.F32Type.get()
    lhs_t = ir.RankedTensorType(m.lhs.type)
    if lhs_t.element_type != f32 or ir.RankedTensorType(m.init.type).element_type != f32 or not zero_fill(m.init):
        return None
    found = bf16.layout(m.d_shape)
    if found is None:
        warnings.warn(f"{m.matmul.location}: bf16 weight {m.d_shape} is outside the bf16 kernels' range "
                      f"([N/16, K/2, 16, 2], K <= {bf16.MAX_K}): generic fused form", KernelNotUsed)
        return None
    tiles, k = found
    rows = None if lhs_t.is_dynamic_dim(0) else lhs_t.shape[0]
    n = tiles * bf16.LANES
    if rows == 1 or verify:
        return _call_kernel(m, bf16.matvec_name(k, n, rows), lambda: bf16.matvec_definitions(k, tiles, kernel, rows), [m.lhs, weight], defined)
    return _call_kernel(m, bf16.matmul_name(k, n, rows), lambda: bf16.matmul_definitions(k, tiles, kernel, rows), [m.lhs, weight], defined)


def run(module: ir.Module, cpu_tiles: bool = False, int8_activations: str = "none", kernel: Optional[KernelObject] = None,
        int8_kernel: Optional[KernelObject] = None, int8_matmul: bool = True, glue: Optional[dict[str, int]] = None,
        verify_rows: bool = False, bf16_kernel: Optional[KernelObject] = None) -> list[str]:
    """Rewrite every matching matmul in `module`; returns their locations.

    `cpu_tiles`: the module is compiled for IREE's llvm-cpu backend; decode generics carry our
    measured tile sizes (see `_decode_cpu_config`). `int8_activations`: "prefill" makes int8
    matmuls with a dynamic row count integer matmuls (`rewrite_integer`), "all" every int8
    matmul, "none" none. `kernel`: the int4 kernels' object (int4_kernel.build_object):
    int4 matmuls call them instead of a generated loop. `int8_kernel`: the int8 kernels' object
    (int8_kernel.build_object): one-row int8 matmuls call them, and (`int8_matmul`) the integer
    matmuls `int8_activations` asks for. `glue`: a dict to count in; the kernels' quantization
    of several rows computes x itself from the silu(gate) * up or RMSNorm producing it
    (passes/quantize_glue.py), counted by kind ("none": plain); None: never. `verify_rows`: the
    kernels' objects have the few-row matrix-vector kernels; the `verify` entry point calls them.
    `bf16_kernel`: the bf16 kernels' object (kernels/bf16.py): matmuls on bf16 weights call them.
    """
    if int8_activations not in INT8_ACTIVATIONS:
        raise ValueError(f"int8_activations: unknown mode {int8_activations!r} (choose from {', '.join(INT8_ACTIVATIONS)})")
    matmuls: list[ir.Operation] = []

    def collect(op):
        if op.name == "linalg.matmul":
            matmuls.append(op.operation if hasattr(op, "operation") else op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(collect)
    done, defined = [], set()
    for op in matmuls:
        m = match(op)
        if m is None:
            continue
        done.append(str(op.location))
        rows = ir.RankedTensorType(m.lhs.type).shape[0]
        dynamic = rows == ir.ShapedType.get_dynamic_size()
        q_weight = _integer_weight(m)
        function = enclosing_function(op)
        verify = function == VERIFY
        if verify:  # as decode computes: the int8 kernel's x per block, else "all"'s rows
            integer = q_weight is not None and int8_activations == "all" and int8_kernel is None
        else:
            integer = q_weight is not None and (int8_activations == "all" or (int8_activations == "prefill" and dynamic))
        # verify and small batched decode steps, with `verify_rows`: the decode kernels' few-row
        # form (each row the decode kernel's bits). Both quantize the x that IREE computed, as
        # decode's one-row kernels do (no glue).
        batched = function is not None and function.startswith(BATCHED_DECODE) and not dynamic and rows <= BATCHED_FEW_ROWS
        rows_kernel = verify_rows and (verify or batched)
        op_glue = None if verify or rows_kernel else glue
        bf16_weight = _bf16_weight(m) if bf16_kernel is not None else None
        if bf16_weight is not None and _call_bf16_kernel(m, bf16_weight, bf16_kernel, defined, verify) is not None:
            pass
        elif q_weight is not None and int8_kernel is not None and \
                _call_int8_kernel(m, q_weight, int8_kernel, defined, integer and int8_matmul, op_glue, rows_kernel) is not None:
            pass
        elif integer:
            rewrite_integer(m, q_weight)
        elif kernel is None or _call_int4_kernel(m, kernel, defined, op_glue, rows_kernel) is None:
            rewrite(m, cpu_tiles)
    return done


def rewrite_file(src: Path, dst: Path, cpu_tiles: bool = False, int8_activations: str = "none", kernel: Optional[KernelObject] = None,
                 int8_kernel: Optional[KernelObject] = None, int8_matmul: bool = True, glue: Optional[dict[str, int]] = None) -> int:
    """Run the pass on an MLIR file (text or bytecode); returns the rewrite count."""
    return len(mlir_file.rewrite(src, dst, lambda module: run(module, cpu_tiles, int8_activations, kernel, int8_kernel, int8_matmul, glue)))


@dataclass(frozen=True)
class DequantMatmulResult:
    fused: int  # quantized matmuls rewritten
    glue: dict[str, int]  # the kernels' row quantizations by what they compute ("none": plain x)


@dataclass(frozen=True)
class DequantMatmulPass:
    """The pass as a build runs it (passes/pipeline.py): the options chosen for the target, and
    the number of quantized matmuls the module holds (any left unfused fails the build)."""

    name: ClassVar[str] = "dequant_matmul"
    expected: int
    cpu_tiles: bool = False
    int8_activations: str = "none"
    int4_kernel: bool = False
    int8_kernel: bool = False
    int8_matmul: bool = True
    glue: bool = False
    kernel_set: str = "x86_64_avx2"  # the kernel set (kernels/toolchain.py) whose objects the kernels link
    bf16_kernel: bool = False  # bf16-weight matmuls call the bf16 kernels (kernels/bf16.py) of `kernel_set`

    def run(self, module: ir.Module, work: Path) -> DequantMatmulResult:
        from iree_glm.kernels import bf16, int4, int8, toolchain

        kernel_set = toolchain.by_name(self.kernel_set)
        glue: Optional[dict[str, int]] = {} if self.glue else None
        done = run(module, self.cpu_tiles, self.int8_activations, int4.build_object(work, kernel_set) if self.int4_kernel else None,
                   int8.build_object(work, kernel_set) if self.int8_kernel else None, self.int8_matmul, glue,
                   kernel_set.verify_rows, bf16.build_object(work, kernel_set) if self.bf16_kernel else None)
        if len(done) != self.expected:
            raise RuntimeError(f"dequant-matmul pass fused {len(done)} of {self.expected} quantized matmuls")
        return DequantMatmulResult(len(done), glue or {})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m iree_glm.passes.dequant_matmul", description=__doc__.splitlines()[0])
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--cpu-tiles", action="store_true", help="add our decode tile sizes for IREE's llvm-cpu backend")
    p.add_argument("--int8-activations", choices=INT8_ACTIVATIONS, default="none",
                   help="int8 matmuls to run as i8 x i8 -> i32 with activations quantized per row")
    p.add_argument("--int4-kernel", action="store_true",
                   help="int4 matmuls call the AVX2 kernels (their object is written beside OUT; x86-64 llvm-cpu only)")
    p.add_argument("--int8-kernel", action="store_true",
                   help="int8 decode matmuls call the AVX2 kernel (its object is written beside OUT; x86-64 llvm-cpu only)")
    args = p.parse_args(argv)
    objects = {}
    from iree_glm.kernels import int4, int8
    from iree_glm.kernels.toolchain import KernelUnavailable

    for option, wanted, kernels in (("--int4-kernel", args.int4_kernel, int4), ("--int8-kernel", args.int8_kernel, int8)):
        if wanted:
            try:
                objects[option] = kernels.build_object(args.output.resolve().parent)
            except KernelUnavailable as e:
                from iree_glm.errors import UserError

                raise UserError(f"{option}: {e}") from None
    n = rewrite_file(args.input, args.output, args.cpu_tiles, args.int8_activations, objects.get("--int4-kernel"), objects.get("--int8-kernel"))
    print(f"dequant-matmul: fused {n} matmul(s)")
    return 0


if __name__ == "__main__":
    from iree_glm.errors import run_cli

    sys.exit(run_cli(main))
