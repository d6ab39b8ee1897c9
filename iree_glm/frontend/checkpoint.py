"""Reading (and, for the default and test models, writing) Hugging Face checkpoint folders.

Weights are read from safetensors only, never from pickles. Every problem is reported as a
`CheckpointError` naming the file, before any compile work starts.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from iree_glm.bundle.model_config import ModelConfig
from iree_glm.frontend.hf_config import read_hf_config
from iree_glm.errors import CheckpointError
from iree_glm.validation import ValidationError, from_data
from iree_glm.frontend.model import CausalLM

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


@dataclass
class Checkpoint:
    path: Path
    config: ModelConfig
    weight_files: list[Path]
    tokenizer_files: list[Path]

    @property
    def has_tokenizer(self) -> bool:
        return any(p.name == "tokenizer.json" for p in self.tokenizer_files)


def open_checkpoint(path: Path) -> Checkpoint:
    """Check that a folder is a readable checkpoint of a supported model (weights not loaded)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint folder does not exist")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a folder (expected a Hugging Face checkpoint folder)")
    config = read_hf_config(path / "config.json")
    index = path / "model.safetensors.index.json"
    single = path / "model.safetensors"
    if index.exists():
        files = _shards(path, index)
    elif single.exists():
        files = [single]
    else:
        if list(path.glob("*.bin")) or list(path.glob("*.pt")):
            raise CheckpointError(
                f"{path}: only pickle weights (*.bin/*.pt) found; iree_glm loads safetensors only "
                "(convert with transformers' save_pretrained(safe_serialization=True))"
            )
        raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json")
    tok = [path / n for n in TOKENIZER_FILES if (path / n).exists()]
    ckpt = Checkpoint(path, config, files, tok)
    if not ckpt.has_tokenizer:
        warnings.warn(f"{path}: no tokenizer.json; the bundle will need token ids to run", stacklevel=2)
    return ckpt


@dataclass(frozen=True)
class SafetensorsIndex:
    """`model.safetensors.index.json`: which shard holds each tensor."""

    weight_map: dict[str, str]
    metadata: dict[str, Any] | None = None


def _shards(path: Path, index: Path) -> list[Path]:
    """The shard files an index names, each a plain file inside the checkpoint folder (a name
    leading elsewhere, absolute or through `..` or a symlink, is refused and never read)."""
    try:
        data = json.loads(index.read_bytes())
    except OSError as e:
        raise CheckpointError(f"{index}: cannot read it ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{index}: not a safetensors index ({type(e).__name__})") from None
    try:
        weight_map = from_data(SafetensorsIndex, data, str(index), ignore_unknown=True).weight_map
    except ValidationError as e:
        raise CheckpointError(str(e)) from None
    root = os.path.realpath(path)
    files = []
    for name in sorted(set(weight_map.values())):
        try:
            real = os.path.realpath(path / name, strict=True)
        except (OSError, RuntimeError, ValueError) as e:
            problem = "does not exist" if isinstance(e, FileNotFoundError) else f"cannot be resolved ({type(e).__name__})"
            raise CheckpointError(f"{index}: names shard '{name}', which {problem}") from None
        if os.path.commonpath([root, real]) != root or not os.path.isfile(real):
            raise CheckpointError(f"{index}: names shard '{name}', which is not a file inside the checkpoint folder")
        files.append(path / name)
    if not files:
        raise CheckpointError(f"{index}: weight_map is empty")
    return files


def load_state_dict(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in ckpt.weight_files:
        try:
            state.update(load_file(f))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{f}: cannot read safetensors ({e})") from None
    return state


def load_model(ckpt: Checkpoint, dtype: torch.dtype = torch.float32) -> CausalLM:
    """Build our model and fill it from the checkpoint, checking every name and shape."""
    model = CausalLM(ckpt.config)
    expected = model.state_dict()
    state = load_state_dict(ckpt)
    where = ckpt.weight_files[0] if len(ckpt.weight_files) == 1 else ckpt.path
    for name, tensor in expected.items():
        if name not in state:
            raise CheckpointError(f"{where}: missing weight '{name}' required by config.json")
        if state[name].is_floating_point() != tensor.is_floating_point():
            raise CheckpointError(
                f"{where}: weight '{name}' is stored as {str(state[name].dtype).removeprefix('torch.')}, "
                f"expected a floating-point type (a file written with the wrong dtype?)"
            )
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{where}: weight '{name}' has shape {tuple(state[name].shape)}, "
                f"config.json implies {tuple(tensor.shape)}"
            )
    # Tied checkpoints may still carry lm_head.weight; anything else unknown is an error.
    extra = sorted(set(state) - set(expected) - {"lm_head.weight"} - {k for k in state if k.endswith("rotary_emb.inv_freq")})
    if extra:
        raise CheckpointError(f"{where}: weights not used by a {ckpt.config.family} model: {', '.join(extra[:5])}")
    model.load_state_dict({k: state[k].to(dtype) for k in expected}, strict=True)
    return model.to(dtype).eval()


def hf_config_dict(cfg: ModelConfig) -> dict:
    """The config.json transformers writes for this model (used for generated checkpoints)."""
    arch = {v: k for k, v in {"Glm4ForCausalLM": "glm4", "GlmForCausalLM": "glm", "LlamaForCausalLM": "llama"}.items()}
    d = {
        "architectures": [arch[cfg.family]],
        "model_type": cfg.family,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": cfg.rope_theta,
            "partial_rotary_factor": cfg.partial_rotary_factor,
        },
        "attention_bias": cfg.attention_bias,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "pad_token_id": None,  # transformers' GLM defaults point past a small vocabulary
    }
    if cfg.family == "llama":
        d["mlp_bias"] = cfg.mlp_bias
    if cfg.bos_token_id is not None:
        d["bos_token_id"] = cfg.bos_token_id
    if cfg.eos_token_ids:
        d["eos_token_id"] = list(cfg.eos_token_ids)
    return d


def write_checkpoint(model: CausalLM, path: Path) -> None:
    """Write a model as a Hugging Face checkpoint folder (config.json + model.safetensors)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(hf_config_dict(model.cfg), indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


def random_model(cfg: ModelConfig, seed: int) -> CausalLM:
    """A model with seeded random weights (scaled like a trained model's, so logits are sane)."""
    gen = torch.Generator().manual_seed(seed)
    model = CausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    return model.eval()
