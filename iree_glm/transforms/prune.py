"""Structured pruning: drop the least important attention heads and FFN channels.

`--prune heads=R,ffn=R` makes the model really smaller: the pruned model is an ordinary,
smaller `ModelConfig` (fewer heads, smaller intermediate size) exported and compiled as usual,
so compute, weights and (for heads) the KV cache all shrink.

Units and why:
- Heads are removed as whole KV groups (one KV head plus the query heads that share it), the
  same number in every layer: `ModelConfig` has one head count for all layers, and dropping a
  group removes its K/V projections and its slice of the KV cache too. A model with a single
  KV head (MQA) has no group to drop, so there the unit is one query head per layer.
- FFN channels are removed per layer (the same count in each), from gate, up and down at once.

Importance is measured on calibration text (activation x weight, the structured analogue of
Wanda): a head group's score is the mean L2 norm of its contribution to `o_proj`'s output;
an FFN channel's score is mean |up * silu(gate)| times the L2 norm of its `down_proj` column.
The lowest-scoring units of each layer go.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from iree_glm.errors import UserError
from iree_glm.frontend import default_model
from iree_glm.frontend.model import CausalLM

# A sample of the default model's training text (the Python manual, stdlib docstrings): plain English.
DEFAULT_CALIBRATION = default_model.FILES / "calibration.txt"
CALIBRATION_TOKENS = 4096
CALIBRATION_WINDOW = 256


@dataclass(frozen=True)
class PruneSpec:
    heads: float = 0.0  # fraction of head units (KV groups, or query heads for MQA) to remove
    ffn: float = 0.0  # fraction of FFN channels to remove

    def __str__(self) -> str:
        return f"heads={self.heads:g},ffn={self.ffn:g}"


@dataclass
class PrunePlan:
    """What pruning removed, per layer (indices are of the original model)."""

    unit: str  # "kv_group" or "head"
    removed_units: list[list[int]]
    removed_channels: list[list[int]]

    def summary(self, before, after) -> str:
        return (
            f"pruned heads {before.num_heads}->{after.num_heads} (kv {before.num_kv_heads}->{after.num_kv_heads}), "
            f"ffn {before.intermediate_size}->{after.intermediate_size} per layer"
        )


def parse_prune_spec(text: str) -> PruneSpec:
    """`heads=R,ffn=R` (either part optional) -> PruneSpec; ratios must lie in [0, 1)."""
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in ("heads", "ffn"):
            raise UserError(f"--prune: '{part}' is not heads=R or ffn=R (example: --prune heads=0.25,ffn=0.5)")
        if key in values:
            raise UserError(f"--prune: '{key}' is given twice")
        try:
            ratio = float(value)
        except ValueError:
            raise UserError(f"--prune: {key}={value} is not a number") from None
        if not 0.0 <= ratio < 1.0:
            raise UserError(f"--prune: {key}={value} is outside [0, 1)")
        values[key] = ratio
    if not values:
        raise UserError("--prune: give heads=R and/or ffn=R (example: --prune heads=0.25,ffn=0.5)")
    return PruneSpec(**values)


def _count(ratio: float, total: int) -> int:
    """Units to remove: the ratio of `total`, rounded half up."""
    return int(ratio * total + 0.5)


def _head_units(cfg) -> tuple[str, int]:
    return ("kv_group", cfg.num_kv_heads) if cfg.num_kv_heads > 1 else ("head", cfg.num_heads)


def check_spec(spec: PruneSpec, cfg) -> None:
    """Reject a spec that would leave a layer without heads or FFN channels."""
    unit, total = _head_units(cfg)
    n = _count(spec.heads, total)
    if n >= total:
        name = "KV groups" if unit == "kv_group" else "heads"
        raise UserError(
            f"--prune heads={spec.heads:g} would remove every attention head of each layer "
            f"({n} of {total} {name}); use a ratio below {(total - 0.5) / total:g}"
        )
    if _count(spec.ffn, cfg.intermediate_size) >= cfg.intermediate_size:
        raise UserError(f"--prune ffn={spec.ffn:g} would remove every FFN channel of each layer")


@torch.no_grad()
def importance(model: CausalLM, ids: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer: head-unit scores [units] and FFN channel scores [intermediate] on `ids`."""
    cfg = model.cfg
    unit, n_units = _head_units(cfg)
    heads_per_unit = cfg.num_heads // n_units
    d = cfg.head_dim
    head_sum = [torch.zeros(n_units) for _ in range(cfg.num_layers)]
    ffn_sum = [torch.zeros(cfg.intermediate_size) for _ in range(cfg.num_layers)]
    count = 0

    def on_o_proj(i: int):
        def hook(mod: nn.Linear, args):
            x = args[0].reshape(-1, cfg.num_heads, d)  # [N, H, D]
            w = mod.weight.reshape(cfg.hidden_size, cfg.num_heads, d)  # [hidden, H, D]
            contrib = torch.einsum("nhd,ohd->nho", x, w)  # each head's share of the output
            per_unit = contrib.reshape(x.shape[0], n_units, heads_per_unit, -1).sum(2)
            head_sum[i] += per_unit.norm(dim=-1).sum(0)
        return hook

    def on_down_proj(i: int):
        def hook(mod: nn.Linear, args):
            a = args[0].reshape(-1, cfg.intermediate_size)
            ffn_sum[i] += a.abs().sum(0) * mod.weight.norm(dim=0)
        return hook

    handles = []
    for i, layer in enumerate(model.model.layers):
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(on_o_proj(i)))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(on_down_proj(i)))
    try:
        for start in range(0, len(ids), CALIBRATION_WINDOW):
            window = torch.tensor([ids[start : start + CALIBRATION_WINDOW]], dtype=torch.long)
            k, v = model.empty_cache(1, window.shape[1])
            model.all_logits(window, torch.zeros(1, dtype=torch.long), k, v)
            count += window.shape[1]
    finally:
        for h in handles:
            h.remove()
    return [s / count for s in head_sum], [s / count for s in ffn_sum]


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.data[rows].clone())
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.data[rows].clone())
    linear.out_features = len(rows)


def _keep_cols(linear: nn.Linear, cols: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.data[:, cols].clone())
    linear.in_features = len(cols)


def _lowest(scores: torch.Tensor, n: int) -> list[int]:
    return sorted(torch.argsort(scores, stable=True)[:n].tolist())


def prune_model(model: CausalLM, spec: PruneSpec, calibration_ids: list[int]) -> tuple[CausalLM, PrunePlan]:
    """Remove the least important head units and FFN channels (in place); returns model and plan."""
    cfg = model.cfg
    check_spec(spec, cfg)
    if len(calibration_ids) < 16:
        raise UserError(f"--prune: calibration text is too short ({len(calibration_ids)} tokens; need at least 16)")
    unit, n_units = _head_units(cfg)
    n_heads_out = _count(spec.heads, n_units)
    n_ffn_out = _count(spec.ffn, cfg.intermediate_size)
    head_scores, ffn_scores = importance(model, calibration_ids[:CALIBRATION_TOKENS])

    d, inter = cfg.head_dim, cfg.intermediate_size
    group = cfg.num_heads // cfg.num_kv_heads
    plan = PrunePlan(unit, [], [])
    for i, layer in enumerate(model.model.layers):
        gone = _lowest(head_scores[i], n_heads_out)
        kept_units = [u for u in range(n_units) if u not in gone]
        if unit == "kv_group":
            q_heads = [g * group + j for g in kept_units for j in range(group)]
            kv_heads = kept_units
        else:
            q_heads, kv_heads = kept_units, list(range(cfg.num_kv_heads))
        q_idx = torch.tensor([h * d + j for h in q_heads for j in range(d)])
        kv_idx = torch.tensor([h * d + j for h in kv_heads for j in range(d)])
        attn = layer.self_attn
        _keep_rows(attn.q_proj, q_idx)
        _keep_rows(attn.k_proj, kv_idx)
        _keep_rows(attn.v_proj, kv_idx)
        _keep_cols(attn.o_proj, q_idx)

        cut = _lowest(ffn_scores[i], n_ffn_out)
        keep = torch.tensor([c for c in range(inter) if c not in set(cut)])
        mlp = layer.mlp
        if mlp.fused:  # gate_up_proj rows are [gate; up]
            _keep_rows(mlp.gate_up_proj, torch.cat([keep, keep + inter]))
        else:
            _keep_rows(mlp.gate_proj, keep)
            _keep_rows(mlp.up_proj, keep)
        _keep_cols(mlp.down_proj, keep)
        plan.removed_units.append(gone)
        plan.removed_channels.append(cut)

    kept = n_units - n_heads_out
    new_cfg = dataclasses.replace(
        cfg,
        num_heads=kept * group if unit == "kv_group" else kept,
        num_kv_heads=kept if unit == "kv_group" else cfg.num_kv_heads,
        intermediate_size=inter - n_ffn_out,
    )
    model.cfg = new_cfg
    for layer in model.model.layers:
        layer.self_attn.cfg = new_cfg
    return model, plan


def calibration_ids(tokenizer_json: Path | None, text_file: Path | None) -> list[int]:
    """Token ids of the calibration text (default: the shipped sample of the default model's training text)."""
    from iree_glm.bundle.tokenizer import TextTokenizer

    if tokenizer_json is None:
        raise UserError("--prune needs the checkpoint's tokenizer.json to tokenize the calibration text")
    path = Path(text_file) if text_file is not None else DEFAULT_CALIBRATION
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--calibration {path}: cannot read text ({e})") from None
    return TextTokenizer(tokenizer_json).encode(text)
