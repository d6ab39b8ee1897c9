"""config.json, safetensors headers and shard indexes from outside: one CheckpointError line
naming the file and the key, never a traceback, never a file read outside the checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from iree_glm.errors import CheckpointError
from iree_glm.frontend.checkpoint import load_model, open_checkpoint
from iree_glm.frontend.hf_config import read_hf_config

from ..helpers import write_hf_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "ckpt"
    write_hf_checkpoint("glm4_gqa", path, tokenizer=False)
    return path


def _copy(ckpt: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ckpt"
    shutil.copytree(ckpt, out)
    return out


def _config_with(ckpt: Path, tmp_path: Path, **changes) -> Path:
    out = tmp_path / "config.json"
    data = json.loads((ckpt / "config.json").read_text())
    data.update(changes)
    out.write_text(json.dumps(data))
    return out


@pytest.mark.parametrize("changes, expected", [
    ({"hidden_size": "64"}, "hidden_size: expected an integer, got '64'"),
    ({"num_attention_heads": 0}, "num_attention_heads: 0 is below the minimum 1"),
    ({"num_key_value_heads": -2}, "num_key_value_heads: -2 is below the minimum 1"),
    ({"rms_norm_eps": float("nan")}, "rms_norm_eps: expected a finite number, got nan"),
    ({"vocab_size": float("inf")}, "vocab_size: expected an integer, got inf"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings: expected true or false"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": "big"}}, "rope_parameters.rope_theta: expected a number"),
    ({"eos_token_id": [100000]}, "eos_token_id 100000 is outside the vocabulary"),
    ({"num_hidden_layers": True}, "num_hidden_layers: expected an integer, got True"),
])
def test_config_values_of_the_wrong_type_or_impossible_are_refused(ckpt, tmp_path, changes, expected):
    path = _config_with(ckpt, tmp_path, **changes)
    with pytest.raises(CheckpointError) as info:
        read_hf_config(path)
    assert expected in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_non_utf8_config_is_one_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"architectures": ["Glm4ForCausalLM"], "x": "\xff"}')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_hf_config(path)


def _index(folder: Path, shard: str) -> None:
    (folder / "model.safetensors").rename(folder / "shard-1.safetensors")
    names = ["model.embed_tokens.weight", "lm_head.weight"]
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {n: shard for n in names}}))


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "link.safetensors", "loop.safetensors"])
def test_a_shard_index_naming_files_outside_the_checkpoint_is_refused(ckpt, tmp_path, shard):
    folder = _copy(ckpt, tmp_path)
    outside = tmp_path / "outside.safetensors"
    shutil.copy(folder / "model.safetensors", outside)
    os.symlink(outside, folder / "link.safetensors")
    os.symlink(folder / "loop.safetensors", folder / "loop.safetensors")  # a symlink to itself
    _index(folder, shard)
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(folder)
    assert f"names shard '{shard}'" in str(info.value) and "\n" not in str(info.value)


def test_a_shard_index_of_the_wrong_shape_is_refused(ckpt, tmp_path):
    folder = _copy(ckpt, tmp_path)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": 3}}))
    with pytest.raises(CheckpointError, match=r"weight_map\.a: expected a string"):
        open_checkpoint(folder)


def _retype(path: Path, tensor: str, dtype: str) -> None:
    """Rewrite one tensor's dtype in a safetensors header (same element size, same length)."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header[tensor]["dtype"] = dtype
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n
    path.write_bytes(raw[:8] + text.ljust(n) + raw[8 + n:])


@pytest.mark.parametrize("dtype", ["I32", "U32"])
def test_a_tensor_stored_in_another_dtype_of_the_same_size_is_refused(ckpt, tmp_path, dtype):
    folder = _copy(ckpt, tmp_path)
    _retype(folder / "model.safetensors", "model.embed_tokens.weight", dtype)
    with pytest.raises(CheckpointError) as info:
        load_model(open_checkpoint(folder))
    assert "'model.embed_tokens.weight' is stored as" in str(info.value) and "\n" not in str(info.value)
