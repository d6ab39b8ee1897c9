"""torch.export -> MLIR (torch dialect) with every weight moved out to a parameter archive.

The FX importer would inline each weight as a literal; our hook instead declares a
`util.global` initialised from `#stream.parameter.named<"model"::NAME>` and loads it, so the
compiled module is code only and the runtime mmaps the weights from the .irpa file.

KV caches are updated in place. torch.export records the model's `index_put_` on a cache
argument as an input mutation, which the importer writes as `torch.copy.to_vtensor` +
`torch.overwrite.tensor.contents`; IREE 3.13 lowers that overwrite to a copy of the WHOLE
cache into the argument's buffer after the call. `_drop_overwrites` removes the pair instead:
the cache becomes a plain argument whose only use is the scatter of the new entries, which
IREE then performs in the caller's buffer (no clone: nothing reads the old value after the
write). The runtime relies on that: it passes the same device buffers again on every call
(tests/runtime/test_kv_cache.py checks that a later call sees the entries of an earlier one).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch.export import Dim

from iree_glm.bundle.manifest import EntryPoint
from iree_glm.bundle.kv_layout import STORE_KV
from iree_glm.bundle.signature import SIGNATURE_KEY

PARAMETER_SCOPE = "model"


class HiddenStates(torch.nn.Module):
    """The `embed` entry point: a prefill that returns the final-norm hidden states [1, T, H]
    of its tokens instead of the last logits (the runtime pools them into an embedding)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens, start, slots, key_positions, *caches):
        return self.model.hidden_states(tokens, start, slots, key_positions, caches)


def _mlir_element_type(ir, dtype: torch.dtype):
    return {
        torch.float32: ir.F32Type.get,
        torch.float16: ir.F16Type.get,
        torch.bfloat16: ir.BF16Type.get,
        torch.int8: lambda: ir.IntegerType.get_signless(8),
        torch.int32: lambda: ir.IntegerType.get_signless(32),
        torch.int64: lambda: ir.IntegerType.get_signless(64),
    }[dtype]()


_INLINE_MAX = 16  # elements


def _inline_literal(literal: Any) -> bool:
    """A tiny 1-d int8 constant (int4's nibble shifts): imported inline, not as a dense_resource
    blob, so passes can read its values (the dequant-matmul pass unrolls the nibble dim on them)."""
    return isinstance(literal, torch.Tensor) and literal.dtype == torch.int8 and literal.dim() == 1 and literal.numel() <= _INLINE_MAX


def _inline_constant(gni, literal: torch.Tensor):
    from iree.compiler import ir

    values = ", ".join(str(int(v)) for v in literal.tolist())
    attr = ir.Attribute.parse(f"dense<[{values}]> : tensor<{literal.numel()}xi8>")
    const = ir.Operation.create("arith.constant", results=[ir.DenseElementsAttr(attr).type], attributes={"value": attr}).result
    return ir.Operation.create("torch_c.from_builtin_tensor", results=[gni._cc.tensor_to_vtensor_type(literal)], operands=[const]).result


def _parameter_hooks(names: dict[int, str]):
    """Build the FxImporterHooks subclass that turns named weights into parameter globals."""
    from iree.compiler import ir
    from iree.compiler.extras.fx_importer import FxImporterHooks

    class ParameterHooks(FxImporterHooks):
        def __init__(self):
            self.declared: dict[str, str] = {}  # parameter name -> global symbol
            self.module_op = None

        def prepare_module(self, module_op):
            self.module_op = module_op

        def resolve_literal(self, gni, literal: Any, info) -> Any:
            if _inline_literal(literal):
                return _inline_constant(gni, literal)
            if not isinstance(literal, torch.Tensor) or id(literal) not in names:
                return None
            name = names[id(literal)]
            tensor_type = ir.RankedTensorType.get(list(literal.shape), _mlir_element_type(ir, literal.dtype))
            symbol = self.declared.get(name)
            if symbol is None:
                symbol = "__param_" + "".join(c if c.isalnum() else "_" for c in name)
                glob = ir.Operation.parse(
                    f'util.global private @{symbol} = #stream.parameter.named<"{PARAMETER_SCOPE}"::"{name}"> : {tensor_type}'
                )
                body = self.module_op.regions[0].blocks[0]
                ir.InsertionPoint.at_block_begin(body).insert(glob)
                self.declared[name] = symbol
            loaded = ir.Operation.create(
                "util.global.load",
                results=[tensor_type],
                attributes={"global": ir.FlatSymbolRefAttr.get(symbol), "is_immutable": ir.UnitAttr.get()},
            ).result
            vtensor_type = gni._cc.tensor_to_vtensor_type(literal)
            return ir.Operation.create("torch_c.from_builtin_tensor", results=[vtensor_type], operands=[loaded]).result

    return ParameterHooks()


def example_inputs(ep: EntryPoint, first_input: torch.Tensor, layers: int, cfg, cache_dtype: torch.dtype):
    """(args, dynamic_shapes) for a step `f(x, start, slots, key_positions, *caches)`.

    Dynamic: the sequence length (prefill), the attended keys n (0..n-1) and the cache rows.
    Example sizes differ from each other so that export never takes two of them for one, and
    n stays below the capacity: a slice of all C positions would fix n to C.
    """
    rows = ep.batch + 2
    keys = next((k for k in range(ep.capacity - 1, 2, -1) if k != rows), ep.capacity)
    start = torch.zeros(ep.batch, dtype=torch.int64)
    slots = torch.arange(ep.batch, dtype=torch.int64)
    key_positions = torch.arange(keys, dtype=torch.int64)
    shape = (rows, cfg.num_kv_heads, ep.capacity, cfg.head_dim)
    caches = tuple(torch.zeros(shape, dtype=cache_dtype) for _ in range(2 * layers))
    row_dim = Dim("rows", min=1)
    x_dynamic = None if ep.seq_len is not None else {1: Dim("seq_len", min=1, max=ep.capacity)}
    dynamic = (x_dynamic, None, None, {0: Dim("keys", min=1, max=ep.capacity)})
    if caches:  # a stage without attention has none
        dynamic += (tuple({0: row_dim} for _ in caches),)
    return (first_input, start, slots, key_positions, *caches), dynamic


def export_program(module: torch.nn.Module, args: tuple, dynamic):
    """torch.export + the decompositions IREE needs (SDPA kept whole: IREE fuses it)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # torch 2.13 internal deprecation
        prog = torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)
        table = torch.export.default_decompositions()
        table.pop(torch.ops.aten.scaled_dot_product_attention.default, None)
        return prog.run_decompositions(table)


def _export(model: torch.nn.Module, ep: EntryPoint, cache_dtype: torch.dtype):
    cfg = model.cfg
    tokens = torch.zeros(ep.batch, 2 if ep.seq_len is None else ep.seq_len, dtype=torch.int64)
    args, dynamic = example_inputs(ep, tokens, cfg.num_layers, cfg, cache_dtype)
    model.all_rows = ep.all_logits
    like_decode = [m for m in model.modules() if getattr(m, "verify_like_decode", False)] if ep.all_logits else []
    if ep.batch == 1 and ep.seq_len == 1:  # a decode step: where another device computes what the CPU kernel does
        like_decode = [m for m in model.modules() if getattr(m, "decode_like_kernel", False)]
    decode_form = [m for m in model.modules() if getattr(m, "verify_decode_form", False)] if ep.all_logits else []
    for m in like_decode:
        m.quantized_activations = True
    for m in decode_form:
        m.decode_form = True
    try:
        return export_program(HiddenStates(model) if ep.returns == "hidden" else model, args, dynamic)
    finally:
        model.all_rows = False
        for m in like_decode:
            m.quantized_activations = False
        for m in decode_form:
            m.decode_form = False


class KVStore(torch.nn.Module):
    """forward(slot [1], start [1], kv [2, L, Hkv, P, D], k_0, v_0, ...): cache row `slot` takes
    kv at positions start..start+P-1, in place. Puts prefix-cache blocks back on the device."""

    def __init__(self, layers: int):
        super().__init__()
        self.layers = layers

    def forward(self, slot, start, kv, *caches):
        from iree_glm.frontend.kv_cache_ops import read_cache, write_cache_

        positions = start[:, None] + torch.arange(kv.shape[3], device=kv.device)[None, :]
        first = []
        for i in range(self.layers):
            for j in (0, 1):
                cache = caches[2 * i + j]
                write_cache_(cache, kv[j, i][None], slot, positions)
                first.append(read_cache(cache, slot, start).reshape(-1)[:1])
        # The result reads each written cache: a write nothing reads would be dropped as dead
        # code once the overwrites are gone (see the module docstring).
        return torch.cat(first)


def _export_store(cfg, capacity: int, cache_dtype: torch.dtype):
    rows = 3
    shape = (rows, cfg.num_kv_heads, capacity, cfg.head_dim)
    caches = tuple(torch.zeros(shape, dtype=cache_dtype) for _ in range(2 * cfg.num_layers))
    kv = torch.zeros(2, cfg.num_layers, cfg.num_kv_heads, 2, cfg.head_dim, dtype=cache_dtype)
    args = (torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64), kv, *caches)
    row_dim = Dim("rows", min=1)
    dynamic = (None, None, {3: Dim("entries", min=1, max=capacity)}, tuple({0: row_dim} for _ in caches))
    return export_program(KVStore(cfg.num_layers), args, dynamic)


def import_programs(owner: torch.nn.Module, programs: Iterable[tuple[str, Any]]):
    """Import (function name, ExportedProgram) pairs into one MLIR module; every tensor in
    `owner.state_dict()` becomes a named parameter. Returns (module, context, declared names)."""
    from iree.compiler import ir
    from iree.compiler.extras.fx_importer import FxImporter

    state = owner.state_dict(keep_vars=True)
    names = {id(t): n for n, t in state.items()}
    names.update({id(t.data): n for n, t in state.items()})
    context = ir.Context()
    hooks = _parameter_hooks(names)
    importer = FxImporter(context=context, hooks=hooks)
    for func_name, prog in programs:
        # Non-persistent buffers (rotary inv_freq) live in ep.constants, not ep.state_dict.
        for name, value in prog.constants.items():
            prog.state_dict.setdefault(name, value)
        _rename_state(prog, names)
        func = importer.import_program(prog, func_name=func_name)
        _drop_overwrites(func)
        _declare_signature(func)
    return importer.module, context, set(hooks.declared)


def _drop_overwrites(func) -> None:
    """Turn mutated (`!torch.tensor`) arguments back into plain value arguments: remove their
    `torch.copy.to_vtensor` and `torch.overwrite.tensor.contents` (see the module docstring)."""
    from iree.compiler import ir

    block = func.regions[0].blocks[0]
    for op in list(block.operations):
        name = op.operation.name
        if name == "torch.overwrite.tensor.contents":
            op.operation.erase()
        elif name == "torch.copy.to_vtensor" and isinstance(op.operands[0], ir.BlockArgument):
            arg = ir.BlockArgument(op.operands[0])
            arg.set_type(op.results[0].type)
            op.results[0].replace_all_uses_with(arg)
            op.operation.erase()
    ftype = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
    with func.context:
        func.attributes["function_type"] = ir.TypeAttr.get(
            ir.FunctionType.get([a.type for a in block.arguments], ftype.results))


def _declare_signature(func) -> None:
    """Record the function's own type in its reflection (`iree_glm.signature`): the runtime
    reads the shapes the code was compiled for from the module, not from the editable manifest."""
    from iree.compiler import ir

    ftype = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
    with func.context:
        func.attributes["iree.reflection"] = ir.DictAttr.get({SIGNATURE_KEY: ir.StringAttr.get(str(ftype))})


def export_mlir(model: torch.nn.Module, entry_points: Iterable[EntryPoint], cache_dtype=torch.float32):
    """Export each entry point of `model`, plus `store_kv`, into one MLIR module; returns (module, context)."""
    entry_points = list(entry_points)
    # `verify` first: IREE names a dispatch that several functions share after the first of them,
    # so every dispatch verify runs carries its name (compiler/exact_rows.py reads verify's).
    first = sorted(entry_points, key=lambda ep: not ep.all_logits)
    programs = [(ep.name, _export(model, ep, cache_dtype)) for ep in first]
    programs.append((STORE_KV, _export_store(model.cfg, entry_points[0].capacity, cache_dtype)))
    module, context, declared = import_programs(model, programs)
    missing = set(model.state_dict()) - declared
    if missing:
        raise RuntimeError(f"weights were not turned into parameters: {sorted(missing)[:3]}")
    return module, context


def _rename_state(prog, names: dict[int, str]) -> None:
    """Make the hook recognise the program's copies of our weights by identity."""
    for key, value in prog.state_dict.items():
        if id(value) not in names and key in {n for n in names.values()}:
            names[id(value)] = key


def write_parameter_archive(model: torch.nn.Module, path: Path, tensors: dict[str, torch.Tensor] | None = None) -> int:
    """Write the model's weights (or `tensors`) to an IREE parameter archive; returns bytes written."""
    from iree.runtime import ParameterIndex

    index = ParameterIndex()
    total = 0
    for name, t in (tensors if tensors is not None else model.state_dict()).items():
        arr = t.detach().contiguous()
        arr = arr.view(torch.int16).numpy() if arr.dtype == torch.bfloat16 else arr.numpy()
        index.add_buffer(name, np.ascontiguousarray(arr))
        total += arr.nbytes
    index.create_archive_file(str(path))
    return total
