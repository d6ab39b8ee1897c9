"""torch.export -> MLIR (torch dialect) with every weight moved out to a parameter archive.

The FX importer would inline each weight as a literal; our hook instead declares a
`util.global` initialised from `#stream.parameter.named<"model"::NAME>` and loads it, so the
compiled module is code only and the runtime mmaps the weights from the .irpa file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch.export import Dim

PARAMETER_SCOPE = "model"


@dataclass(frozen=True)
class EntryPoint:
    """One exported function: its name and the example inputs that fix its shapes."""

    name: str
    batch: int
    seq_len: int | None  # None: dynamic sequence length (prefill)
    capacity: int


def _mlir_element_type(ir, dtype: torch.dtype):
    return {
        torch.float32: ir.F32Type.get,
        torch.float16: ir.F16Type.get,
        torch.bfloat16: ir.BF16Type.get,
        torch.int8: lambda: ir.IntegerType.get_signless(8),
        torch.int32: lambda: ir.IntegerType.get_signless(32),
        torch.int64: lambda: ir.IntegerType.get_signless(64),
    }[dtype]()


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


def _export(model: torch.nn.Module, ep: EntryPoint, cache_dtype: torch.dtype):
    cfg = model.cfg
    seq = 2 if ep.seq_len is None else ep.seq_len
    tokens = torch.zeros(ep.batch, seq, dtype=torch.int64)
    start = torch.zeros(ep.batch, dtype=torch.int64)
    shape = (cfg.num_layers, ep.batch, cfg.num_kv_heads, ep.capacity, cfg.head_dim)
    k_cache = torch.zeros(shape, dtype=cache_dtype)
    v_cache = torch.zeros(shape, dtype=cache_dtype)
    dynamic = None
    if ep.seq_len is None:
        dynamic = ({1: Dim("seq_len", min=1, max=ep.capacity)}, None, None, None)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # torch 2.13 internal deprecation
        prog = torch.export.export(model, (tokens, start, k_cache, v_cache), dynamic_shapes=dynamic, strict=False)
        table = torch.export.default_decompositions()
        table.pop(torch.ops.aten.scaled_dot_product_attention.default, None)
        return prog.run_decompositions(table)


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
        importer.import_frozen_program(prog, func_name=func_name)
    return importer.module, context, set(hooks.declared)


def export_mlir(model: torch.nn.Module, entry_points: Iterable[EntryPoint], cache_dtype=torch.float32):
    """Export each entry point of `model` into one MLIR module; returns (module, context)."""
    programs = ((ep.name, _export(model, ep, cache_dtype)) for ep in entry_points)
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
