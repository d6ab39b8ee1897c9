"""The small model a new user gets when `compile` is given no checkpoint.

Until a trained model ships, it is a small GLM-4 with seeded random weights and a
byte-level tokenizer, generated into a checkpoint folder on demand. Its text is noise,
and every tool that uses it says so.
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint import random_model, write_checkpoint
from .config import ModelConfig
from .tokenizer import byte_level_tokenizer_json

SEED = 1234
DEFAULT_BUNDLE = Path("bundles") / "default"
DESCRIPTION = "default model: small GLM-4, seeded random weights (untrained, its text is noise)"

CONFIG = ModelConfig(
    family="glm4",
    vocab_size=257,  # 256 bytes + <|endoftext|>
    hidden_size=256,
    intermediate_size=768,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=64,
    attention_bias=True,
    partial_rotary_factor=0.5,
    rms_norm_eps=1e-5,
    max_position_embeddings=4096,
    eos_token_ids=(256,),
)


def write_default_checkpoint(path: Path) -> Path:
    """Write the default model as a Hugging Face checkpoint folder; returns the folder."""
    write_checkpoint(random_model(CONFIG, SEED), path)
    (Path(path) / "tokenizer.json").write_text(byte_level_tokenizer_json())
    return Path(path)
