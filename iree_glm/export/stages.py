"""Stages of a partition plan as exportable torch modules: one IREE module per device.

A stage runs a consecutive run of parts (embeddings, layer i's attention, layer i's FFN, the
output head) of a `CausalLM` and shares its modules, so parameter names (and the .irpa
archive) are the full model's. Its input is the token ids (if it starts with the embeddings)
or the hidden state from the previous stage; its output is the hidden state or, with the
head, the last position's logits. It keeps the KV cache of its own attention parts only:
`[n_attn, B, Hkv, C, D]`, so each device holds the cache of the layers it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from iree_glm.export.program import EntryPoint, example_inputs, export_program, import_programs
from iree_glm.planner.scheduler import PartitionPlan


@dataclass(frozen=True)
class StageSpec:
    """What one stage runs and where (the plan's segment, as stored in the bundle)."""

    index: int
    device: str
    parts: tuple[str, ...]

    @property
    def attn_layers(self) -> list[int]:
        return [int(p.split(".")[1]) for p in self.parts if p.endswith(".attn")]

    @property
    def takes_tokens(self) -> bool:
        return self.parts[0] == "embed"

    @property
    def gives_logits(self) -> bool:
        return self.parts[-1] == "head"

    def to_dict(self) -> dict:
        return {"index": self.index, "device": self.device, "parts": list(self.parts)}

    @classmethod
    def from_dict(cls, d: dict) -> "StageSpec":
        return cls(d["index"], d["device"], tuple(d["parts"]))


def stages_of(plan: PartitionPlan) -> list[StageSpec]:
    """The plan's segments in order (consecutive parts on one device)."""
    return [
        StageSpec(i, s.device, tuple(p.part for p in plan.parts[s.first : s.last + 1]))
        for i, s in enumerate(plan.segments)
    ]


class Stage(nn.Module):
    """Parts of a CausalLM; forward(x, start, slots, key_positions, k_0, v_0, ...) -> out
    (caches of its attention parts, updated in place; see CausalLM)."""

    def __init__(self, full: nn.Module, spec: StageSpec):
        super().__init__()
        self.cfg = full.cfg
        self.spec = spec
        body = nn.Module()
        body.rotary = full.model.rotary
        tied_head = spec.gives_logits and getattr(full, "lm_head", None) is None
        if spec.takes_tokens or tied_head:
            body.embed_tokens = full.model.embed_tokens
        layers = nn.ModuleDict()
        for part in spec.parts:
            if part.startswith("layers."):
                i, kind = part.split(".")[1:]
                src = full.model.layers[int(i)]
                piece = layers[i] if i in layers else nn.Module()
                names = ("self_attn", "input_layernorm", "post_self_attn_layernorm") if kind == "attn" else (
                    "mlp", "post_attention_layernorm", "post_mlp_layernorm")
                for n in names:
                    if hasattr(src, n):
                        setattr(piece, n, getattr(src, n))
                layers[i] = piece
        body.layers = layers
        if spec.gives_logits:
            body.norm = full.model.norm
            if not tied_head:
                self.lm_head = full.lm_head
        self.model = body

    def forward(self, x, start, slots, key_positions, *caches):
        m = self.model
        s = x.shape[1]
        torch._check(s >= 1)  # tells export's shape solver what Dim(min=1) means for a float input
        positions = start[:, None] + torch.arange(s, device=x.device)[None, :]
        if self.spec.attn_layers:
            cos, sin = m.rotary.cos_sin(positions)
        j = 0  # attention parts seen so far: their caches are caches[2j], caches[2j + 1]
        for part in self.spec.parts:
            if part == "embed":
                x = m.embed_tokens(x)
            elif part == "head":
                last = m.norm(x)[:, -1]
                head = getattr(self, "lm_head", None)
                x = head(last) if head is not None else torch.nn.functional.linear(last, m.embed_tokens.weight)
            else:
                i, kind = part.split(".")[1:]
                layer = m.layers[i]
                if kind == "attn":  # DecoderLayer.forward, first half
                    h = layer.self_attn(layer.input_layernorm(x), m.rotary, cos, sin, positions, slots, key_positions,
                                        caches[2 * j], caches[2 * j + 1])
                    j += 1
                    if hasattr(layer, "post_self_attn_layernorm"):
                        h = layer.post_self_attn_layernorm(h)
                    x = x + h
                else:  # second half
                    h = layer.mlp(layer.post_attention_layernorm(x))
                    if hasattr(layer, "post_mlp_layernorm"):
                        h = layer.post_mlp_layernorm(h)
                    x = x + h
        return x


def _export_stage(stage: Stage, ep: EntryPoint, cache_dtype: torch.dtype):
    cfg = stage.cfg
    seq = 2 if ep.seq_len is None else ep.seq_len
    if stage.spec.takes_tokens:
        x = torch.zeros(ep.batch, seq, dtype=torch.int64)
    else:
        x = torch.zeros(ep.batch, seq, cfg.hidden_size, dtype=torch.float32)
    args, dynamic = example_inputs(ep, x, len(stage.spec.attn_layers), cfg, cache_dtype)
    return export_program(stage, args, dynamic)


def export_stage_mlir(stage: Stage, entry_points: Iterable[EntryPoint], cache_dtype=torch.float32):
    """Export a stage's entry points into one MLIR module with parameters by name (as export.py)."""
    programs = ((ep.name, _export_stage(stage, ep, cache_dtype)) for ep in entry_points)
    module, context, _ = import_programs(stage, programs)
    return module, context


# -- building a bundle's stage modules -------------------------------------------------------

def stage_file(spec: StageSpec, prefix: str = "") -> str:
    """The stage's module file; `prefix` tells a phase's own stages apart ("prefill-")."""
    return f"{prefix}stage{spec.index}-{spec.device}.vmfb"


def export_stages(model: nn.Module, stages: list[StageSpec], entry_points: list[EntryPoint], work, prefix: str = "") -> list:
    """Export every stage to `work/{prefix}stage{i}.mlirbc`; returns [(path, quantized matmul count)]."""
    from iree_glm.transforms.quantize import quantized_layer_count

    out = []
    for spec in stages:
        stage = Stage(model, spec)
        module, _ctx = export_stage_mlir(stage, entry_points)
        path = work / f"{prefix}stage{spec.index}.mlirbc"
        with open(path, "wb") as f:
            module.operation.write_bytecode(f)
        out.append((path, quantized_layer_count(stage) * len(entry_points)))
        del module, _ctx
    return out


