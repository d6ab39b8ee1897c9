"""Structured pruning: shapes really shrink, the result is a valid checkpoint, bad input is refused."""

import json

import numpy as np
import pytest
import torch

from iree_glm.cli import compile as compile_cli
from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.frontend.checkpoint import load_model, open_checkpoint, write_checkpoint
from iree_glm.errors import run_cli
from iree_glm.errors import UserError
from iree_glm.transforms.prune import PruneSpec, calibration_ids, parse_prune_spec, prune_model
from iree_glm.runtime import Session

from ..helpers import write_hf_checkpoint


@pytest.fixture(scope="module")
def llama_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "llama_mqa"
    write_hf_checkpoint("llama_mqa", path)
    return path


def _pruned(path, spec: str):
    ckpt = open_checkpoint(path)
    ids = calibration_ids(path / "tokenizer.json", None)
    return prune_model(load_model(ckpt), parse_prune_spec(spec), ids)


def _transformers_logits(path, ids):
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(path, pad_token_id=None).eval()
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0]


def _our_logits(model, ids):
    k, v = model.empty_cache(1, len(ids))
    with torch.no_grad():
        return model.all_logits(torch.tensor([ids]), torch.zeros(1, dtype=torch.long), k, v)[0][0]


def test_spec_parsing():
    assert parse_prune_spec("heads=0.25,ffn=0.5") == PruneSpec(0.25, 0.5)
    assert parse_prune_spec("ffn=0") == PruneSpec(0.0, 0.0)
    for bad in ("heads=1", "ffn=-0.1", "heads=1.5", "heads=x", "tails=0.1", "heads", "", "heads=0.1,heads=0.2"):
        with pytest.raises(UserError, match="--prune"):
            parse_prune_spec(bad)


def test_kv_groups_pruned_and_checkpoint_matches_transformers(glm4_checkpoint, tmp_path):
    path, _ = glm4_checkpoint
    model, plan = _pruned(path, "heads=0.5,ffn=0.5")
    cfg = model.cfg
    assert plan.unit == "kv_group"
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size) == (2, 1, 48)
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (2 * 24, 64) and attn.k_proj.weight.shape == (24, 64)
    assert attn.o_proj.weight.shape == (64, 48)
    assert model.model.layers[0].mlp.gate_up_proj.weight.shape == (96, 64)
    assert model.model.layers[0].mlp.down_proj.weight.shape == (64, 48)
    # The pruned model is an ordinary checkpoint: transformers computes the same logits.
    write_checkpoint(model, tmp_path / "pruned")
    ids = [5, 17, 99, 3, 250, 42, 7, 8, 9]
    assert torch.allclose(_our_logits(model, ids), _transformers_logits(tmp_path / "pruned", ids), atol=1e-4)


def test_mqa_prunes_query_heads_and_unfused_mlp(llama_checkpoint, tmp_path):
    # (transformers insists on hidden_size % num_heads == 0, so keep 2 of 4 heads here.)
    model, plan = _pruned(llama_checkpoint, "heads=0.5,ffn=0.25")
    assert plan.unit == "head"
    assert (model.cfg.num_heads, model.cfg.num_kv_heads, model.cfg.intermediate_size) == (2, 1, 72)
    assert model.model.layers[0].self_attn.q_proj.weight.shape == (2 * 16, 64)
    mlp = model.model.layers[1].mlp
    assert mlp.up_proj.weight.shape == (72, 64) and mlp.up_proj.bias.shape == (72,)
    assert mlp.down_proj.weight.shape == (64, 72) and mlp.down_proj.bias.shape == (64,)
    write_checkpoint(model, tmp_path / "pruned")
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    assert torch.allclose(_our_logits(model, ids), _transformers_logits(tmp_path / "pruned", ids), atol=1e-4)


def test_importance_removes_dead_units(glm4_checkpoint):
    """A KV group and FFN channels whose output weights are zero contribute nothing: they go first."""
    path, _ = glm4_checkpoint
    ckpt = open_checkpoint(path)
    model = load_model(ckpt)
    with torch.no_grad():
        model.model.layers[0].self_attn.o_proj.weight[:, 2 * 24 :] = 0  # group 1 = heads 2, 3
        model.model.layers[1].mlp.down_proj.weight[:, [3, 50, 70]] = 0
    ids = calibration_ids(path / "tokenizer.json", None)
    _, plan = prune_model(model, PruneSpec(heads=0.5, ffn=3 / 96), ids)
    assert plan.removed_units[0] == [1]
    assert plan.removed_channels[1] == [3, 50, 70]


def test_pruned_bundle_runs_and_matches_torch(glm4_checkpoint, tmp_path):
    path, _ = glm4_checkpoint
    out = tmp_path / "pruned-bundle"
    result = build_bundle(path, out, BuildOptions(max_context=64, prune=PruneSpec(heads=0.5, ffn=0.5)))
    assert result.manifest.model.num_kv_heads == 1 and result.manifest.model.intermediate_size == 48
    assert json.loads((out / "config.json").read_text())["num_key_value_heads"] == 1
    assert result.manifest.options.prune == "heads=0.5,ffn=0.5"
    session = Session.load(out)
    model, _ = _pruned(path, "heads=0.5,ffn=0.5")
    prompt = [5, 17, 99, 3, 250, 42, 7]
    logits = session.run_prefill(prompt, 0, session.new_cache())
    assert np.abs(logits - _our_logits(model, prompt)[-1].numpy()).max() < 1e-4
    assert len(session.generate(prompt, max_new_tokens=5, stop_ids=()).generated_ids) == 5


@pytest.mark.parametrize(
    "prune, message",
    [
        ("heads=1.0", "outside [0, 1)"),
        ("ffn=-0.5", "outside [0, 1)"),
        ("heads=0.8", "would remove every attention head"),
        ("heads=half", "is not a number"),
    ],
)
def test_cli_bad_prune_is_one_line_exit_2(glm4_checkpoint, tmp_path, capsys, prune, message):
    path, _ = glm4_checkpoint
    rc = run_cli(compile_cli.main, [str(path), "-o", str(tmp_path / "b"), "--prune", prune])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: --prune") and message in err
    assert not (tmp_path / "b").exists()
