"""A Hugging Face config.json -> our ModelConfig; anything we would get wrong is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iree_glm.bundle.model_config import ARCHITECTURES, ModelConfig
from iree_glm.errors import CheckpointError

def _need(hf: dict, key: str, path: Path) -> Any:
    if key not in hf:
        raise CheckpointError(f"{path}: config.json has no '{key}'")
    return hf[key]


def read_hf_config(path: Path) -> ModelConfig:
    """Parse `config.json` of a supported architecture; reject anything we would get wrong."""
    path = Path(path)
    try:
        hf = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found (a checkpoint folder needs config.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(hf, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    archs = hf.get("architectures") or []
    family = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
    if family is None:
        supported = ", ".join(ARCHITECTURES)
        raise CheckpointError(
            f"{path}: unsupported architecture {archs or '(none given)'}; supported: {supported}"
        )
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise CheckpointError(f"{path}: hidden_act '{act}' is not supported (only 'silu')")

    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise CheckpointError(f"{path}: rope type '{rope_type}' is not supported (only 'default')")
    rope_theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    if family == "llama":
        # transformers' Llama rotates the whole head whatever partial_rotary_factor says.
        partial = 1.0
    else:
        partial = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 0.5))

    hidden = int(_need(hf, "hidden_size", path))
    heads = int(_need(hf, "num_attention_heads", path))
    head_dim = int(hf.get("head_dim") or hidden // heads)
    eos = hf.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
    cfg = ModelConfig(
        family=family,
        vocab_size=int(_need(hf, "vocab_size", path)),
        hidden_size=hidden,
        intermediate_size=int(_need(hf, "intermediate_size", path)),
        num_layers=int(_need(hf, "num_hidden_layers", path)),
        num_heads=heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=head_dim,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
        rope_theta=float(rope_theta),
        partial_rotary_factor=float(partial),
        attention_bias=bool(hf.get("attention_bias", family in ("glm", "glm4"))),
        mlp_bias=bool(hf.get("mlp_bias", False)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_ids=tuple(int(e) for e in eos_ids),
    )
    if cfg.num_heads % cfg.num_kv_heads:
        raise CheckpointError(
            f"{path}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({cfg.num_kv_heads})"
        )
    if cfg.rotary_dim % 2 or cfg.rotary_dim <= 0:
        raise CheckpointError(f"{path}: rotary dimension {cfg.rotary_dim} must be positive and even")
    return cfg
