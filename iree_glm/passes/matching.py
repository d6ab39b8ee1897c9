"""Small IR queries every pass uses to match the linalg ops our exporter produces."""

from __future__ import annotations

from typing import Optional

from iree.compiler import ir


def producer(value: ir.Value) -> Optional[ir.Operation]:
    """The op defining `value`, or None for a block argument."""
    owner = value.owner
    return owner.operation if isinstance(owner, (ir.OpView, ir.Operation)) else None


def shape(value: ir.Value) -> list[int]:
    return list(ir.RankedTensorType(value.type).shape)


def use_count(value: ir.Value) -> int:
    return len(list(value.uses))


def indexing_maps(op: ir.Operation) -> list[str]:
    """A linalg op's indexing maps as text, e.g. "(d0, d1) -> (d1)"."""
    return [str(ir.AffineMapAttr(a).value) for a in ir.ArrayAttr(op.attributes["indexing_maps"])]


def iterators(op: ir.Operation) -> list[str]:
    """A linalg.generic's iterator types: "parallel" or "reduction"."""
    return [str(t).split("<")[-1].rstrip(">") for t in op.opview.iterator_types]


def scalar_constant(value: ir.Value) -> Optional[float]:
    """The number an `arith.constant` scalar holds (int or float), else None."""
    op = producer(value)
    if op is None or op.name != "arith.constant":
        return None
    attr = op.attributes["value"]
    if isinstance(attr, (ir.FloatAttr, ir.IntegerAttr)):
        return attr.value
    return None


def zero_fill(value: ir.Value) -> bool:
    """Whether `value` is a `linalg.fill` of the constant 0 (a fresh accumulator)."""
    op = producer(value)
    return op is not None and op.name == "linalg.fill" and scalar_constant(op.operands[0]) == 0.0


def enclosing_function(op: ir.Operation) -> Optional[str]:
    """The exported name of the function holding `op` (IREE's ABI wraps `f` around `f$async`)."""
    while op is not None and op.name not in ("func.func", "util.func"):
        op = op.parent
    return ir.StringAttr(op.attributes["sym_name"]).value.split("$")[0] if op is not None else None
