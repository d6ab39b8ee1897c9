"""Rewrite the model's marked attention into block-sparse attention (torch-dialect MLIR).

Why a pass: IREE lowers a masked attention densely (every S x C score is computed, masked
or not), so a sparsity pattern expressed as a mask saves nothing. This pass replaces the
attention itself: each query block gathers only the key/value blocks of its window plus the
G global keys and attends over them (`iree_glm.sparse_attention.block_sparse_attention`).
Where our attention kernel is built, a build does not use this pass: the pattern is then a
parameter of that kernel (passes/attention_kernel.py). This pass serves the rest: a
sliding-window (`ring`) cache, and targets without the kernel.

Design: the model exports its attention as one recognisable op,
`torch.operator "torch.iree_glm.block_sparse_attention"(q, k_cache, v_cache, positions,
local, global, block, ring)` (ring = the slots of a sliding-window cache after the G
globals, else 0). For every operand signature the pass instantiates the kernel
(`blocked_attention`, written in torch, exported with the query rows as `block * blocks`
and imported into the same MLIR context),
wraps it in a function written here in torch-dialect MLIR that pads the queries to whole
blocks and cuts the padding off again, and replaces the op by a call, which IREE inlines.
Anything the pass cannot match — no marked op, a dense `aten.scaled_dot_product_attention`
left beside the marked ones, a pattern or shape it cannot serve — is an error, never a silent
dense fallback.

Use: `run(module) -> number rewritten` (build.py runs it on the exported module), or
`python -m iree_glm.passes.sparse_attention IN.mlir -o OUT.mlir`.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from iree_glm.errors import UserError

MARKED_OP = "torch.iree_glm.block_sparse_attention"
DENSE_OP = "torch.aten.scaled_dot_product_attention"


class SparseAttentionError(UserError):
    """The module's attention cannot be rewritten into block-sparse form."""


@dataclass(frozen=True)
class Signature:
    """Everything that fixes one kernel instance: static shapes (None = dynamic) and pattern."""

    q: tuple[int | None, ...]
    kv: tuple[int | None, ...]
    positions: tuple[int | None, ...]
    local: int
    global_: int
    block: int
    ring: int


@dataclass
class Match:
    op: Any  # the marked torch.operator
    signature: Signature


def _shape(value_type) -> tuple[int | None, ...] | None:
    """Sizes of a !torch.vtensor<[..],dtype> (None for '?'), or None if unranked."""
    text = str(value_type)
    if not text.startswith("!torch.vtensor<[") or "]," not in text:
        return None
    dims = text[len("!torch.vtensor<[") : text.index("]")]
    return tuple(None if d == "?" else int(d) for d in dims.split(",")) if dims else ()


def _dtype(value_type) -> str:
    text = str(value_type)
    return text[text.rindex(",") + 1 : -1]


def _constant_int(value, what: str) -> int:
    from iree.compiler import ir

    owner = value.owner if isinstance(value, ir.OpResult) else None
    if owner is None or owner.name != "torch.constant.int":
        raise SparseAttentionError(f"block-sparse attention: '{what}' is not a constant integer ({value.get_name()})")
    return int(str(owner.attributes["value"]).split(":")[0])


def match(op) -> Match:
    """Check one marked op and read its signature (SparseAttentionError if unusable)."""
    if len(op.operands) != 8:
        raise SparseAttentionError(f"block-sparse attention at {op.location}: expected 8 operands (got {len(op.operands)})")
    q, k, v, positions, local, global_, block, ring = op.operands
    qs, ks, vs, ps = (_shape(x.type) for x in (q, k, v, positions))
    where = f"block-sparse attention at {op.location}"
    if qs is None or ks is None or len(qs) != 4 or len(ks) != 4 or ks != vs:
        raise SparseAttentionError(f"{where}: expected q [b,H,S,D] and k, v [b,Hkv,C,D] (got {q.type}, {k.type}, {v.type})")
    if any(_dtype(x.type) != "f32" for x in (q, k, v)):
        raise SparseAttentionError(f"{where}: only f32 attention is supported (got {_dtype(q.type)})")
    if None in (ks[0], ks[1], ks[3], qs[1], qs[3]) or qs[1] % ks[1] or qs[3] != ks[3]:
        raise SparseAttentionError(f"{where}: heads or head size do not match (q {q.type}, k {k.type})")
    sig = Signature(qs, ks, ps, _constant_int(local, "local"), _constant_int(global_, "global"),
                    _constant_int(block, "block"), _constant_int(ring, "ring"))
    if min(sig.local, sig.global_, sig.block) <= 0:
        raise SparseAttentionError(f"{where}: local, global and block must be positive (got {sig.local}, {sig.global_}, {sig.block})")
    if sig.ring < 0 or (sig.ring and sig.ring < sig.local + sig.block):
        raise SparseAttentionError(f"{where}: ring must be 0 or at least local+block={sig.local + sig.block} (got {sig.ring})")
    if sig.ring and ks[2] != sig.global_ + sig.ring:
        raise SparseAttentionError(f"{where}: a sliding-window cache of ring={sig.ring} has {sig.global_ + sig.ring} slots (got {ks[2]})")
    if ks[2] is not None and sig.block > ks[2]:
        raise SparseAttentionError(f"{where}: block={sig.block} exceeds the cache ({ks[2]} positions)")
    return Match(op, sig)


def _op_name(op) -> str:
    """An op's name; for `torch.operator` (ops torch-mlir does not know) the operator it names."""
    if op.name == "torch.operator":
        from iree.compiler import ir

        return ir.StringAttr(op.attributes["name"]).value
    return op.name


def _walk(module, name: str) -> list:
    found = []

    def visit(op):
        if _op_name(op) == name:
            found.append(op)
        for region in op.regions:
            for blk in region.blocks:
                for child in blk.operations:
                    visit(child.operation)

    visit(module.operation)
    return found


def _padded_rows(sig: Signature) -> int | None:
    """Query rows the kernel sees: whole blocks; None when the sequence length is dynamic."""
    if sig.q[2] is None:
        return None
    return -(-sig.q[2] // sig.block) * sig.block


def _kernel_program(sig: Signature):
    """torch.export of `blocked_attention` for one signature.

    With a dynamic sequence the padded query rows are `block * blocks` with blocks >= 2 (the
    wrapper adds a spare block), so torch.export sees a plain symbol and never has to reason
    about ceil-division or specialise on a single block.
    """
    import torch
    from torch.export import Dim

    from iree_glm.frontend.sparse_attention import blocked_attention

    class Kernel(torch.nn.Module):
        def forward(self, q, k, v, start):
            return blocked_attention(q, k, v, start, sig.local, sig.global_, sig.block, sig.ring)

    b, h, _, d = sig.q
    rows = _padded_rows(sig)
    q = torch.zeros(b, h, rows or 2 * sig.block, d)
    keys = sig.kv[2]
    k = torch.zeros(*sig.kv[:2], keys or 2 * sig.block, sig.kv[3])
    start = torch.zeros(b, 1, dtype=torch.int64)
    kv_dynamic = None if keys is not None else {2: Dim("keys", min=1)}
    dynamic = None
    if rows is None or kv_dynamic:
        q_dynamic = None if rows is not None else {2: sig.block * Dim("blocks", min=2)}
        dynamic = (q_dynamic, kv_dynamic, kv_dynamic, None)
    with torch.no_grad():
        prog = torch.export.export(Kernel(), (q, k, k.clone(), start), dynamic_shapes=dynamic, strict=False)
        return prog.run_decompositions(torch.export.default_decompositions())


def _wrapper_text(name: str, kernel: str, sig: Signature, types: list[str], result: str) -> str:
    """MLIR (torch dialect) of the function that replaces the marked op: pad the queries to
    whole blocks (plus a spare block when S is dynamic), take the first position, call the
    kernel and cut the padding off again."""
    tq, tk, tv, tp = types
    b, h, _, d = sig.q
    spare = 1 if sig.q[2] is None else 0
    padded = f"!torch.vtensor<[{b},{h},?,{d}],f32>" if spare else f"!torch.vtensor<[{b},{h},{_padded_rows(sig)},{d}],f32>"
    start = f"!torch.vtensor<[{b},1],si64>"
    return f"""
func.func private @{kernel}({padded}, {tk}, {tv}, {start}) -> {padded}
func.func private @{name}(%q: {tq}, %k: {tk}, %v: {tv}, %pos: {tp}) -> {result} {{
  %c0 = torch.constant.int 0
  %c1 = torch.constant.int 1
  %c2 = torch.constant.int 2
  %block = torch.constant.int {sig.block}
  %round = torch.constant.int {sig.block - 1}
  %spare = torch.constant.int {spare}
  %zero = torch.constant.float 0.000000e+00
  %s = torch.aten.size.int %q, %c2 : {tq}, !torch.int -> !torch.int
  %s1 = torch.aten.add.int %s, %round : !torch.int, !torch.int -> !torch.int
  %n = torch.aten.floordiv.int %s1, %block : !torch.int, !torch.int -> !torch.int
  %n1 = torch.aten.add.int %n, %spare : !torch.int, !torch.int -> !torch.int
  %rows = torch.aten.mul.int %n1, %block : !torch.int, !torch.int -> !torch.int
  %pad = torch.aten.sub.int %rows, %s : !torch.int, !torch.int -> !torch.int
  %pads = torch.prim.ListConstruct %c0, %c0, %c0, %pad : (!torch.int, !torch.int, !torch.int, !torch.int) -> !torch.list<int>
  %qp = torch.aten.constant_pad_nd %q, %pads, %zero : {tq}, !torch.list<int>, !torch.float -> {padded}
  %start = torch.aten.slice.Tensor %pos, %c1, %c0, %c1, %c1 : {tp}, !torch.int, !torch.int, !torch.int, !torch.int -> {start}
  %o = func.call @{kernel}(%qp, %k, %v, %start) : ({padded}, {tk}, {tv}, {start}) -> {padded}
  %r = torch.aten.slice.Tensor %o, %c2, %c0, %s, %c1 : {padded}, !torch.int, !torch.int, !torch.int, !torch.int -> {result}
  return %r : {result}
}}
"""


def _instantiate(module, sig: Signature, name: str, types: list[str], result: str):
    """Add the kernel for `sig` and its wrapper `name` (both private) to `module`."""
    from iree.compiler import ir
    from iree.compiler.extras.fx_importer import FxImporter

    importer = FxImporter(context=module.context)
    importer.import_frozen_program(_kernel_program(sig), func_name=name + "_blocks")
    first = module.body.operations[0]
    kernel = next(op for op in importer.module.body.operations if op.operation.name == "func.func")
    kernel.operation.attributes["sym_visibility"] = ir.StringAttr.get("private", module.context)
    kernel.operation.move_before(first)
    wrapper_module = ir.Module.parse(_wrapper_text(name, name + "_blocks", sig, types, result), module.context)
    wrapper = wrapper_module.body.operations[1]  # [0] declares the kernel for the parser
    wrapper.operation.move_before(first)


def run(module) -> int:
    """Rewrite every marked attention op of `module` (in place); returns how many."""
    from iree.compiler import ir

    marked = _walk(module, MARKED_OP)
    dense = _walk(module, DENSE_OP)
    if dense:
        raise SparseAttentionError(
            f"block-sparse attention: {len(dense)} dense attention op(s) ({DENSE_OP}) the pass cannot match"
            " (only the model's marked attention is rewritten)"
        )
    if not marked:
        raise SparseAttentionError(f"block-sparse attention: the module has no attention to rewrite (no {MARKED_OP})")
    matches = [match(op) for op in marked]
    kernels: dict[Signature, str] = {}
    with module.context, ir.Location.unknown(module.context):
        for m in matches:
            operands = list(m.op.operands)[:4]
            result = m.op.result.type
            if m.signature not in kernels:
                name = f"iree_glm_block_sparse_attention_{len(kernels)}"
                _instantiate(module, m.signature, name, [str(x.type) for x in operands], str(result))
                kernels[m.signature] = name
            with ir.InsertionPoint(m.op), m.op.location:
                call = ir.Operation.create(
                    "func.call",
                    results=[result],
                    operands=operands,
                    attributes={"callee": ir.FlatSymbolRefAttr.get(kernels[m.signature])},
                )
            m.op.result.replace_all_uses_with(call.result)
            m.op.erase()
    return len(matches)


def rewrite_file(src: Path, dst: Path) -> int:
    """Run the pass on an MLIR file (text or bytecode); returns how many ops were rewritten."""
    from iree.compiler import ir

    context = ir.Context()
    data = Path(src).read_bytes()
    try:
        module = ir.Module.parse(data, context)
    except ir.MLIRError as e:
        raise UserError(f"{src}: not a valid MLIR module ({str(e).splitlines()[0]})") from None
    n = run(module)
    text = str(module)
    Path(dst).write_text(text)
    return n


def dense_scores_in_dispatches(dump_dir: Path, capacity: int) -> list[str]:
    """Evidence of dense attention in dumped dispatch sources
    (`--iree-hal-dump-executable-sources-to`): attention ops, or tensors whose last dimension
    is the whole cache (S x C scores). Pick a capacity no other dimension of the model equals."""
    pattern = re.compile(rf"iree_linalg_ext\.(online_)?attention|tensor<[0-9x?]*x{capacity}xf32>")
    found = []
    for path in sorted(Path(dump_dir).glob("*.mlir")):
        for m in pattern.finditer(path.read_text()):
            found.append(f"{path.name}: {m.group(0)}")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m iree_glm.passes.sparse_attention", description=__doc__.splitlines()[0])
    p.add_argument("input", type=Path, help="torch-dialect MLIR with marked attention ops")
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(argv)
    n = rewrite_file(args.input, args.output)
    print(f"rewrote {n} attention op(s) into block-sparse attention")
    return 0


if __name__ == "__main__":
    from iree_glm.errors import run_cli

    sys.exit(run_cli(main))
