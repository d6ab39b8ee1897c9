"""Profile policy defaults: the prefix-cache budget and the sparse-attention pattern, through compile."""

import json
from pathlib import Path

import pytest

from iree_glm.planner import fit_memory
from iree_glm.errors import run_cli
from iree_glm.cli.compile import _sparse_pattern, main as compile_main
from iree_glm.frontend.checkpoint import open_checkpoint
from iree_glm.errors import UserError
from iree_glm.planner.profile import ProfileError, load_profile
from iree_glm.transforms.quantize import QuantSpec
from iree_glm.runtime import Session
from iree_glm.bundle.sparse_pattern import parse_pattern
from ..helpers import HOST



def _write(tmp_path: Path, policy: str, memory_gb: float = 24.0, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(HOST.replace("memory_reserve_gb = 2.0", f"memory_reserve_gb = 0.0\n{policy}")
                    .replace("memory_gb = 24.0", f"memory_gb = {memory_gb!r}"))
    return path


def test_policy_keys_load_and_bad_values_name_the_key(tmp_path):
    p = load_profile(_write(tmp_path, 'prefix_cache_mb = 64\nsparse_attention = "local=256,global=16,block=64"'))
    assert p.policy.prefix_cache_mb == 64.0 and p.policy.sparse_attention == "local=256,global=16,block=64"
    assert load_profile(_write(tmp_path, 'sparse_attention = "none"')).policy.sparse_attention is None
    ring = load_profile(_write(tmp_path, 'sparse_attention = "local=8,global=4,block=4,ring"'))
    assert ring.policy.sparse_attention == "local=8,global=4,block=4,ring"
    assert load_profile("host-cpu").policy.sparse_attention is None and load_profile("host-cpu").policy.prefix_cache_mb is None
    assert load_profile(_write(tmp_path, "prefill_chunk = 0")).policy.prefill_chunk == 0
    assert load_profile("host-cpu").policy.prefill_chunk == 256  # measured (host-cpu.toml)
    for policy, message in (
        ("prefix_cache_mb = -1", "policy.prefix_cache_mb: -1.0 is below the minimum 0.0"),
        ('prefix_cache_mb = "big"', "policy.prefix_cache_mb: expected a number"),
        ('sparse_attention = "local=0,global=16,block=64"', "policy.sparse_attention: local must be positive"),
        ('sparse_attention = "window=3"', "policy.sparse_attention: cannot parse 'window=3'"),
        ('sparse_attention = "local=8,global=4,block=4,ring=10"', "policy.sparse_attention: ring=10 is smaller than local\\+block=12"),
        ("decode_batch_sizes = [2, 4]", "policy.decode_batch_sizes: must include 1"),
        ("decode_batch_sizes = [1, 0]", "policy.decode_batch_sizes: expected a list of integers >= 1"),
        ('decode_batch_sizes = "1,2"', "policy.decode_batch_sizes: expected a list"),
        ("prefill_chunk = -32", "policy.prefill_chunk: -32 is below the minimum 0"),
        ("prefill_chunk = 12.5", "policy.prefill_chunk: expected an integer"),
    ):
        with pytest.raises(ProfileError, match=message):
            load_profile(_write(tmp_path, policy))


def test_sparse_option_wins_over_the_profile_and_none_turns_it_off(tmp_path):
    p = load_profile(_write(tmp_path, 'sparse_attention = "local=256,global=16,block=64"'))
    assert str(_sparse_pattern(None, p)) == "local=256,global=16,block=64"
    assert _sparse_pattern("none", p) is None
    assert str(_sparse_pattern("local=32,global=4,block=16", p)) == "local=32,global=4,block=16"
    assert _sparse_pattern(None, load_profile("host-cpu")) is None
    with pytest.raises(UserError, match="--sparse-attention: missing block"):
        _sparse_pattern("local=3,global=4", p)


def test_compile_fits_memory_and_records_the_profile_defaults(glm4_checkpoint, tmp_path, capsys):
    """One build under a tight profile: --fit-memory picks int8 (fp32 does not fit), the profile's
    sparse pattern is applied, and its prefix-cache budget lands in the bundle."""
    ckpt = glm4_checkpoint[0]
    cfg = open_checkpoint(ckpt).config
    policy = 'prefix_cache_mb = 0.5\nsparse_attention = "local=16,global=4,block=8"\ndecode_batch_sizes = [2, 1]\nprefill_chunk = 5'
    attended = fit_memory.attended_keys(parse_pattern("local=16,global=4,block=8"))
    need = {m: fit_memory.need(cfg, fit_memory.weight_bytes(cfg, QuantSpec(m)), 64, 2, 2**19, attended, chunk=5).total
            for m in ("none", "int8")}  # prompts in the profile's calls of 5 tokens
    assert need["int8"] < need["none"]
    profile = _write(tmp_path, policy, (need["int8"] + 1) / 1e9, "tight.toml")
    out = tmp_path / "b"
    assert run_cli(compile_main, [str(ckpt), "-o", str(out), "--profile", str(profile), "--fit-memory", "--max-context", "64"]) == 0
    captured = capsys.readouterr()
    assert "chose --quant int8 --max-context 64" in captured.out and "fp32 does not fit at context 64" in captured.out
    assert "sparse attention local=16,global=4,block=8: the default of profile host-cpu" in captured.err
    options = json.loads((out / "manifest.json").read_text())["options"]
    assert options["quant"]["mode"] == "int8" and options["max_context"] == 64
    assert options["sparse_attention"] == "local=16,global=4,block=8" and options["prefix_cache_mb"] == 0.5
    assert options["prefill_chunk"] == 5
    s = Session.load(out, prefix_cache=True)
    assert s.decode_batch_sizes == [1, 2]  # the profile's decode_batch_sizes
    assert s.prefill_chunk == 5 and Session.load(out, prefill_chunk=0).prefill_chunk == 0
    assert s.prefix_cache.budget_bytes == 2**19
    assert len(s.generate("Hello there", 4, stop_ids=()).generated_ids) == 4
    assert Session.load(out, prefix_cache=True, prefix_cache_bytes=4096).prefix_cache.budget_bytes == 4096  # explicit wins


def test_a_profile_pattern_that_does_not_fit_the_context_names_the_profile_key(tmp_path, capsys):
    profile = _write(tmp_path, 'sparse_attention = "local=256,global=16,block=64"')
    assert run_cli(compile_main, ["-o", str(tmp_path / "b"), "--profile", str(profile), "--max-context", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"error: {profile}: policy.sparse_attention: block=64 is larger than the context (32)"
    assert not (tmp_path / "b").exists()
