"""A Hugging Face config.json -> our ModelConfig; anything we would get wrong is refused.

Every key we read is declared with its type and bounds in `HFConfig` and checked by
iree_glm/validation.py: a string where a size is expected, zero heads, NaN or infinity are one
`CheckpointError` line naming config.json and the key, never a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iree_glm.bundle.model_config import ARCHITECTURES, ModelConfig
from iree_glm.errors import CheckpointError
from iree_glm.validation import ValidationError, bounded, from_data


@dataclass(frozen=True)
class RopeParameters:
    """`rope_parameters` / `rope_scaling` (only the default rotary embedding is supported)."""

    rope_type: str | None = None
    type: str | None = None
    rope_theta: float | None = bounded(None, min=1.0)
    partial_rotary_factor: float | None = bounded(None, min=0.0, max=1.0)


@dataclass(frozen=True)
class HFConfig:
    """The config.json keys iree_glm reads (others are ignored)."""

    vocab_size: int = bounded(min=1)
    hidden_size: int = bounded(min=1)
    intermediate_size: int = bounded(min=1)
    num_hidden_layers: int = bounded(min=1)
    num_attention_heads: int = bounded(min=1)
    architectures: list[str] | None = None
    num_key_value_heads: int | None = bounded(None, min=1)
    head_dim: int | None = bounded(None, min=2)
    hidden_act: str = "silu"
    rms_norm_eps: float = bounded(1e-5, min=1e-12, max=1.0)
    rope_theta: float = bounded(10000.0, min=1.0)
    partial_rotary_factor: float | None = bounded(None, min=0.0, max=1.0)
    rope_parameters: dict[str, Any] | None = None
    rope_scaling: dict[str, Any] | None = None
    attention_bias: bool | None = None
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    max_position_embeddings: int = bounded(2048, min=2)
    bos_token_id: int | None = bounded(None, min=0)
    eos_token_id: int | list[int] | None = None


def read_hf_config(path: Path) -> ModelConfig:
    """Parse `config.json` of a supported architecture; reject anything we would get wrong."""
    path = Path(path)
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found (a checkpoint folder needs config.json)") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    try:
        return _model_config(raw, path)
    except ValidationError as e:
        raise CheckpointError(str(e)) from None


def _model_config(raw: Any, path: Path) -> ModelConfig:
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    archs = raw.get("architectures") or []
    family = next((ARCHITECTURES[a] for a in archs if isinstance(a, str) and a in ARCHITECTURES), None) \
        if isinstance(archs, list) else None
    if family is None:
        raise CheckpointError(f"{path}: unsupported architecture {archs or '(none given)'}; supported: {', '.join(ARCHITECTURES)}")
    hf = from_data(HFConfig, raw, str(path), ignore_unknown=True)
    if hf.hidden_act != "silu":
        raise CheckpointError(f"{path}: hidden_act '{hf.hidden_act}' is not supported (only 'silu')")
    rope_data = hf.rope_parameters or hf.rope_scaling or {}
    rope_key = "rope_parameters" if hf.rope_parameters else "rope_scaling"
    rope_type = rope_data.get("rope_type", rope_data.get("type", "default"))
    if rope_type != "default":
        raise CheckpointError(f"{path}: rope type '{rope_type}' is not supported (only 'default')")
    rope = from_data(RopeParameters, rope_data, str(path), rope_key, ignore_unknown=True)
    if family == "llama":
        partial = 1.0  # transformers' Llama rotates the whole head whatever partial_rotary_factor says
    else:
        partial = next((p for p in (rope.partial_rotary_factor, hf.partial_rotary_factor) if p is not None), 0.5)
    heads = hf.num_attention_heads
    kv_heads = hf.num_key_value_heads or heads
    eos = hf.eos_token_id
    eos_ids = eos if isinstance(eos, list) else ([eos] if eos is not None else [])
    where = f"{path} (as read)"
    cfg = from_data(ModelConfig, {
        "family": family,
        "vocab_size": hf.vocab_size,
        "hidden_size": hf.hidden_size,
        "intermediate_size": hf.intermediate_size,
        "num_layers": hf.num_hidden_layers,
        "num_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": hf.head_dim or hf.hidden_size // heads,
        "rms_norm_eps": hf.rms_norm_eps,
        "rope_theta": rope.rope_theta if rope.rope_theta is not None else hf.rope_theta,
        "partial_rotary_factor": partial,
        "attention_bias": hf.attention_bias if hf.attention_bias is not None else family in ("glm", "glm4"),
        "mlp_bias": hf.mlp_bias,
        "tie_word_embeddings": hf.tie_word_embeddings,
        "max_position_embeddings": hf.max_position_embeddings,
        "bos_token_id": hf.bos_token_id,
        "eos_token_ids": eos_ids,
    }, where)
    bad_eos = [e for e in cfg.eos_token_ids if not 0 <= e < cfg.vocab_size]
    if bad_eos:
        raise CheckpointError(f"{path}: eos_token_id {bad_eos[0]} is outside the vocabulary (0..{cfg.vocab_size - 1})")
    if cfg.num_heads % cfg.num_kv_heads:
        raise CheckpointError(
            f"{path}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({cfg.num_kv_heads})"
        )
    if cfg.rotary_dim % 2 or cfg.rotary_dim <= 0:
        raise CheckpointError(f"{path}: rotary dimension {cfg.rotary_dim} must be positive and even")
    return cfg
