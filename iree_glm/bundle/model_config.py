"""The model hyper-parameters iree_glm understands (read from a Hugging Face config.json by
frontend/hf_config.py, recorded in every bundle's manifest).

One dataclass for the three supported families (GLM, GLM-4, Llama): they share the
decoder shape and differ in a few switches (extra norms, fused gate/up, rotary layout).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from iree_glm.validation import bounded, from_data

# HF architecture name -> our family name.
ARCHITECTURES = {
    "Glm4ForCausalLM": "glm4",
    "GlmForCausalLM": "glm",
    "LlamaForCausalLM": "llama",
}


@dataclass(frozen=True)
class ModelConfig:
    family: str = bounded(choices=tuple(ARCHITECTURES.values()))
    vocab_size: int = bounded(min=1)
    hidden_size: int = bounded(min=1)
    intermediate_size: int = bounded(min=1)
    num_layers: int = bounded(min=1)
    num_heads: int = bounded(min=1)
    num_kv_heads: int = bounded(min=1)
    head_dim: int = bounded(min=2)
    rms_norm_eps: float = bounded(1e-5, min=1e-12, max=1.0)
    rope_theta: float = bounded(10000.0, min=1.0)
    partial_rotary_factor: float = bounded(1.0, min=0.0, max=1.0)
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    max_position_embeddings: int = bounded(2048, min=2)
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def interleaved_rotary(self) -> bool:
        """GLM rotates (even, odd) pairs; Llama rotates the two halves."""
        return self.family in ("glm", "glm4")

    @property
    def has_post_norms(self) -> bool:
        """GLM-4 adds a norm after attention and after the MLP."""
        return self.family == "glm4"

    @property
    def fused_gate_up(self) -> bool:
        return self.family in ("glm", "glm4")

    @property
    def o_proj_bias(self) -> bool:
        return self.family == "llama" and self.attention_bias

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "model config") -> "ModelConfig":
        """A config recorded in a manifest (or anywhere as JSON), every field checked."""
        return from_data(cls, d, where)
