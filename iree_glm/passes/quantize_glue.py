"""Find the elementwise step producing a kernel matmul's input that its quantization can compute.

Before each int4 / int8 matrix kernel (prompts, batched decode) a dispatch quantizes x's rows
(int4_kernel.quantize_executable). In GLM's layers x is, for the down projection, silu(gate) *
up of the gate/up projection's output and, for the q/k/v and gate/up projections, an RMSNorm of
the residual stream: each an IREE dispatch of its own that writes x, which the quantization
then reads. The quantization can compute x from those inputs itself (kernels/x86_64_avx2/row_glue.h),
one pass over memory instead of two dispatches. This module matches exactly the linalg ops
our export produces for them (input-phase IR, x of rank 3 collapsed to [M, K]):

- silu_mul: `up * (g * (1 / (1 + exp(-g))))` (three generics) on two slices [.., 0:I] and
  [.., I:2I] of one tensor E [.., 2I]; with `scaled`, E itself is a generic multiplying a
  tensor A by a [2I] vector (the int8 kernels' per-channel weight scale), and the
  quantization reads A and the vector;
- rms_norm: `w * (h * rsqrt(sum(h^2) / K + eps))` (fpowi, a sum reduction, divf by K, addf
  eps, rsqrt, two mulf) of h [.., K] and w [K].

Anything else (another activation, other operand orders of the non-commutative steps, ops
with more users) is left alone: the plain quantization reads x as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from iree.compiler import ir
from iree.compiler.dialects import tensor

from iree_glm.kernels.static_executable import Glue
from iree_glm.passes.matching import indexing_maps, iterators, producer, scalar_constant, use_count, zero_fill

_IDENTITY3 = "(d0, d1, d2) -> (d0, d1, d2)"


@dataclass
class GlueMatch:
    glue: Glue
    operands: list[ir.Value]  # the quantization's inputs, as Glue.inputs orders them ([M, ..] collapsed to rank 2)


def _generic(value: ir.Value, single_use: bool = True) -> Optional[ir.Operation]:
    """The linalg.generic producing `value` (with no other user if `single_use`)."""
    op = producer(value)
    if op is None or op.name != "linalg.generic" or (single_use and use_count(value) != 1):
        return None
    return op


def _body(op: ir.Operation) -> list[ir.Operation]:
    """The generic's body ops before its yield (which must yield the last of them)."""
    ops = list(op.opview.region.blocks[0].operations)
    if not ops or ops[-1].name != "linalg.yield" or len(ops) < 2 or ops[-1].operands[0] != ops[-2].results[0]:
        return []
    return ops[:-1]


def _args(op: ir.Operation) -> list[ir.Value]:
    return list(op.opview.region.blocks[0].arguments)


def _elementwise(op: ir.Operation, inputs: int) -> bool:
    """All-parallel rank-3 generic on identity maps with `inputs` inputs."""
    return (len(op.opview.inputs) == inputs and iterators(op) == ["parallel"] * 3
            and all(m == _IDENTITY3 for m in indexing_maps(op)))


def _f32_rank3(value: ir.Value) -> bool:
    t = ir.RankedTensorType(value.type)
    return t.rank == 3 and t.element_type == ir.F32Type.get()


def _binary_mulf(op: ir.Operation) -> bool:
    """A body that is one mulf of the two inputs (either order)."""
    body = _body(op)
    args = _args(op)
    return len(body) == 1 and body[0].name == "arith.mulf" and _both(body[0], args[0], args[1])


def _both(op: ir.Operation, a: ir.Value, b: ir.Value) -> bool:
    """op's two operands are a and b, in either order."""
    x, y = op.operands[0], op.operands[1]
    return (x == a and y == b) or (x == b and y == a)


def match(lhs: ir.Value, scaled: bool) -> Optional[GlueMatch]:
    """The glue producing a kernel matmul's x (`lhs`, [M, K] f32), or None. `scaled`: silu_mul
    only on a tensor times a column scale (the int8 kernels' form), else on any tensor."""
    collapse = producer(lhs)
    if collapse is None or collapse.name != "tensor.collapse_shape" or use_count(lhs) != 1:
        return None
    if str(collapse.attributes["reassociation"]) != "[[0, 1], [2]]":
        return None
    x = collapse.operands[0]
    if not _f32_rank3(x):
        return None
    root = _generic(x)
    if root is None:
        return None
    return _silu_mul(root, scaled) or _rms_norm(root)


def _collapse(value: ir.Value) -> ir.Value:
    """[A, B, C] -> [A * B, C] (emitted before the matmul's call)."""
    t = ir.RankedTensorType(value.type)
    lead = ir.ShapedType.get_dynamic_size() if t.is_dynamic_dim(0) or t.is_dynamic_dim(1) else t.shape[0] * t.shape[1]
    i64 = ir.IntegerType.get_signless(64)
    reassoc = ir.ArrayAttr.get([ir.ArrayAttr.get([ir.IntegerAttr.get(i64, 0), ir.IntegerAttr.get(i64, 1)]),
                                ir.ArrayAttr.get([ir.IntegerAttr.get(i64, 2)])])
    return tensor.CollapseShapeOp(ir.RankedTensorType.get([lead, t.shape[2]], t.element_type), value, reassoc).result


def _slice_of(value: ir.Value) -> Optional[tuple[ir.Operation, list[int]]]:
    """(extract_slice, its static offsets) if `value` is a unit-stride slice, used once."""
    op = producer(value)
    if op is None or op.name != "tensor.extract_slice" or use_count(value) != 1:
        return None
    if any(s != 1 for s in ir.DenseI64ArrayAttr(op.attributes["static_strides"])):
        return None
    if len(op.operands) > 1 + sum(1 for s in ir.DenseI64ArrayAttr(op.attributes["static_sizes"]) if s == ir.ShapedType.get_dynamic_size()):
        return None  # dynamic offsets or strides
    return op, list(ir.DenseI64ArrayAttr(op.attributes["static_offsets"]))


def _silu_mul(root: ir.Operation, scaled: bool) -> Optional[GlueMatch]:
    if not _elementwise(root, 2) or not _binary_mulf(root):
        return None
    ins = list(root.opview.inputs)
    for up, t in (ins, ins[::-1]):
        found = _silu_mul_of(up, t, scaled)
        if found:
            return found
    return None


def _silu_mul_of(up: ir.Value, t: ir.Value, scaled: bool) -> Optional[GlueMatch]:
    """up * t with t = g * sigmoid(g), g and up the halves of one tensor (`scaled`: of a tensor times a column scale)."""
    t_op = _generic(t)
    if t_op is None or not _elementwise(t_op, 2) or not _binary_mulf(t_op):
        return None
    a, b = t_op.opview.inputs
    for g, s in ((a, b), (b, a)):
        s_op = _generic(s)
        if s_op is None or not _elementwise(s_op, 1) or s_op.opview.inputs[0] != g or not _sigmoid(s_op):
            continue
        # g is used by t and by the sigmoid: two uses of the one slice
        g_slice = producer(g)
        up_slice = _slice_of(up)
        if g_slice is None or g_slice.name != "tensor.extract_slice" or use_count(g) != 2 or up_slice is None:
            continue
        if any(st != 1 for st in ir.DenseI64ArrayAttr(g_slice.attributes["static_strides"])):
            continue
        up_op, up_offsets = up_slice
        g_offsets = list(ir.DenseI64ArrayAttr(g_slice.attributes["static_offsets"]))
        source = g_slice.operands[0]
        if up_op.operands[0] != source or not _f32_rank3(source):
            continue
        k = ir.RankedTensorType(g.type).shape[2]
        src_t = ir.RankedTensorType(source.type)
        if src_t.is_dynamic_dim(2) or src_t.shape[2] != 2 * k or g_offsets != [0, 0, 0] or up_offsets != [0, 0, k]:
            continue
        # same rows in both slices: the same sizes (static values and dynamic SSA values)
        if (list(ir.DenseI64ArrayAttr(g_slice.attributes["static_sizes"])) != list(ir.DenseI64ArrayAttr(up_op.attributes["static_sizes"]))
                or list(g_slice.operands[1:]) != list(up_op.operands[1:])):
            continue
        if not scaled:
            return GlueMatch(Glue("silu_mul"), [_rows(g_slice, source)])
        scale = _column_scale(source, 2 * k)
        if scale is None:
            continue
        return GlueMatch(Glue("silu_mul", scaled=True), [_rows(g_slice, scale[0]), scale[1]])
    return None


def _column_scale(value: ir.Value, n: int) -> Optional[tuple[ir.Value, ir.Value]]:
    """(a, s) if `value` = a * s (a [.., n] f32, s [n] broadcast over the rows; used only by the two slices)."""
    op = _generic(value, single_use=False)
    if op is None or use_count(value) != 2 or len(op.opview.inputs) != 2 or iterators(op) != ["parallel"] * 3:
        return None
    if indexing_maps(op) != [_IDENTITY3, "(d0, d1, d2) -> (d2)", _IDENTITY3] or not _binary_mulf(op):
        return None
    a, s = op.opview.inputs
    st = ir.RankedTensorType(s.type)
    if not _f32_rank3(a) or use_count(a) != 1 or st.shape != [n] or st.element_type != ir.F32Type.get():
        return None
    return a, s


def _sigmoid(op: ir.Operation) -> bool:
    """1 / (1 + exp(-in))."""
    body = _body(op)
    if [o.name for o in body] != ["arith.negf", "math.exp", "arith.addf", "arith.divf"]:
        return False
    neg, exp, add, div = body
    arg = _args(op)[0]
    return (neg.operands[0] == arg and exp.operands[0] == neg.results[0]
            and add.operands[0] == exp.results[0] and scalar_constant(add.operands[1]) == 1.0
            and scalar_constant(div.operands[0]) == 1.0 and div.operands[1] == add.results[0])


def _rows(g_slice: ir.Operation, source: ir.Value) -> ir.Value:
    """The rows of `source` [.., 2I] the slice g [.., I] covers (all columns), before its use."""
    g = g_slice.results[0]
    t = ir.RankedTensorType(g.type)
    src_t = ir.RankedTensorType(source.type)
    static = list(ir.DenseI64ArrayAttr(g_slice.attributes["static_sizes"]))
    static[2] = src_t.shape[2]
    if static == list(src_t.shape) and list(g_slice.operands[1:]) == _dynamic_extents(source):
        with ir.InsertionPoint(g_slice), g_slice.location:
            return _collapse(source)  # all rows: no slice (IREE would copy it)
    with ir.InsertionPoint(g_slice), g_slice.location:
        rows_t = ir.RankedTensorType.get([*t.shape[:2], src_t.shape[2]], t.element_type)
        rows = tensor.ExtractSliceOp(rows_t, source, [], list(g_slice.operands[1:]), [], [0, 0, 0], static, [1, 1, 1]).result
        return _collapse(rows)


def _dynamic_extents(value: ir.Value) -> Optional[list[ir.Value]]:
    """The SSA values of `value`'s dynamic dims where its producer names them (expand_shape's
    output_shape, a generic's tensor.empty init), else None."""
    op = producer(value)
    if op is not None and op.name == "tensor.expand_shape":
        return list(op.operands[1:])
    if op is not None and op.name == "linalg.generic":
        init = producer(op.opview.outputs[0])
        if init is not None and init.name == "tensor.empty":
            return list(init.operands)
    return None


def _rms_norm(root: ir.Operation) -> Optional[GlueMatch]:
    """w * y (either order), w [K] broadcast over the rows, y = h * r, r = rsqrt(sum(h^2) / K + eps)."""
    if len(root.opview.inputs) != 2 or iterators(root) != ["parallel"] * 3 or not _binary_mulf(root):
        return None
    maps = indexing_maps(root)
    if maps[2] != _IDENTITY3:
        return None
    ins = list(root.opview.inputs)
    for (w, w_map), (y, y_map) in (((ins[0], maps[0]), (ins[1], maps[1])), ((ins[1], maps[1]), (ins[0], maps[0]))):
        if w_map != "(d0, d1, d2) -> (d2)" or y_map != _IDENTITY3:
            continue
        wt = ir.RankedTensorType(w.type)
        y_op = _generic(y)
        if y_op is None or wt.rank != 1 or wt.element_type != ir.F32Type.get() or not _binary_mulf(y_op):
            continue
        k = ir.RankedTensorType(y.type).shape[2]
        if wt.shape[0] != k or iterators(y_op) != ["parallel"] * 3:
            continue
        if indexing_maps(y_op) != [_IDENTITY3, "(d0, d1, d2) -> (d0, d1, 0)", _IDENTITY3]:
            continue
        h, r = y_op.opview.inputs
        body = _body(y_op)
        if body[0].operands[0] != _args(y_op)[0]:  # h * r, in this order
            continue
        eps = _inverse_rms(r, h, k)
        if eps is None:
            continue
        return GlueMatch(Glue("rms_norm", eps=eps), [_collapse_before(h, root), w])
    return None


def _collapse_before(value: ir.Value, op: ir.Operation) -> ir.Value:
    with ir.InsertionPoint(op), op.location:
        return _collapse(value)


def _unary(value: ir.Value, names: list[str]) -> Optional[tuple[ir.Operation, list[ir.Operation]]]:
    """The single-use elementwise generic of one input producing `value` with body ops `names`."""
    op = _generic(value)
    if op is None or not _elementwise(op, 1):
        return None
    body = _body(op)
    if [o.name for o in body] != names or body[0].operands[0] != _args(op)[0]:
        return None
    return op, body


def _inverse_rms(r: ir.Value, h: ir.Value, k: int) -> Optional[float]:
    """eps if r [.., 1] = rsqrt(sum over the last dim of h^2 / k + eps)."""
    found = _unary(r, ["math.rsqrt"])
    if not found:
        return None
    found = _unary(found[0].opview.inputs[0], ["arith.addf"])
    if not found:
        return None
    eps = scalar_constant(found[1][0].operands[1])
    found2 = _unary(found[0].opview.inputs[0], ["arith.divf"])
    if eps is None or not found2 or scalar_constant(found2[1][0].operands[1]) != float(k):
        return None
    total = found2[0].opview.inputs[0]
    red = _generic(total)
    if red is None or iterators(red) != ["parallel", "parallel", "reduction"] or len(red.opview.inputs) != 1:
        return None
    if indexing_maps(red) != [_IDENTITY3, "(d0, d1, d2) -> (d0, d1, 0)"]:
        return None
    body, args = _body(red), _args(red)
    if [o.name for o in body] != ["arith.addf"] or not _both(body[0], args[0], args[1]):
        return None
    if not zero_fill(red.opview.outputs[0]):
        return None
    sq = _unary(red.opview.inputs[0], ["math.fpowi"])
    if not sq or sq[0].opview.inputs[0] != h or scalar_constant(sq[1][0].operands[1]) != 2:
        return None
    return eps


