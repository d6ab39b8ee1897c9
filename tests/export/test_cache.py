"""The export cache: keys that follow the model's structure and not its weights, and builds that reuse them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iree_glm.bundle.manifest import EntryPoint
from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.errors import UserError
from iree_glm.export import cache
from iree_glm.export.program import export_mlir
from iree_glm.frontend.checkpoint import load_model, open_checkpoint
from iree_glm.runtime.session import Session

from ..helpers import write_hf_checkpoint

ENTRY_POINTS = [EntryPoint("prefill", 1, None, 16), EntryPoint("decode", 1, 1, 16)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two tiny GLM-4 checkpoints of one shape with different weights (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("export-cache")
    models = {seed: write_hf_checkpoint("glm4_gqa", root / f"seed{seed}", seed=seed) for seed in (0, 1)}
    return {seed: (root / f"seed{seed}", models[seed]) for seed in (0, 1)}


def _ours(path):
    model = load_model(open_checkpoint(path))
    model.fuse_qkv()
    return model


def _mlir(model) -> bytes:
    module, _ctx = export_mlir(model, ENTRY_POINTS[1:])  # decode (and store_kv) only: each export takes seconds
    return str(module).encode()


def test_weights_are_not_in_the_export_so_one_key_serves_both(checkpoints):
    a, b = _ours(checkpoints[0][0]), _ours(checkpoints[1][0])
    assert not torch.equal(a.state_dict()["model.embed_tokens.weight"], b.state_dict()["model.embed_tokens.weight"])
    assert cache.export_key(a, ENTRY_POINTS) == cache.export_key(b, ENTRY_POINTS) is not None
    assert _mlir(a) == _mlir(b)  # what makes the shared key right


def test_what_shapes_the_export_changes_the_key(checkpoints, tmp_path):
    model = _ours(checkpoints[0][0])
    key = cache.export_key(model, ENTRY_POINTS)
    assert cache.export_key(model, ENTRY_POINTS[:1]) != key  # other entry points
    assert cache.export_key(model, ENTRY_POINTS, dtype="f16") != key  # other options
    attention = next(m for m in model.modules() if hasattr(m, "keys_in_place"))
    attention.keys_in_place = not attention.keys_in_place  # a form a build marks on a module
    assert cache.export_key(model, ENTRY_POINTS) != key
    attention.keys_in_place = not attention.keys_in_place
    assert cache.export_key(model, ENTRY_POINTS) == key
    rotary = next((m, n) for m in model.modules() for n in m._non_persistent_buffers_set)
    getattr(rotary[0], rotary[1]).mul_(2)  # a constant's values (not a named parameter) are traced in
    assert cache.export_key(model, ENTRY_POINTS) != key
    model.scale = torch.tensor(1.0)  # a plain tensor attribute: its value counts
    one = cache.export_key(model, ENTRY_POINTS)
    model.scale = torch.tensor(2.0)
    assert one is not None and cache.export_key(model, ENTRY_POINTS) not in (one, key)
    other = write_hf_checkpoint("glm4_gqa", tmp_path / "long", max_positions=1024)
    assert other is not None and cache.export_key(_ours(tmp_path / "long"), ENTRY_POINTS) != key  # another config


def test_what_the_key_cannot_describe_is_not_cached(checkpoints):
    model = _ours(checkpoints[0][0])
    model.model.layers[0].note = object()
    assert cache.export_key(model, ENTRY_POINTS) is None
    del model.model.layers[0].note
    model.model.layers[0].register_forward_hook(lambda *args: None)
    assert cache.export_key(model, ENTRY_POINTS) is None


def test_entries_are_written_whole(tmp_path):
    source = tmp_path / "m.mlirbc"
    source.write_bytes(b"mlir")
    folder = cache.cache_folder(tmp_path / "cache")
    assert not cache.fetch(folder, "k" * 64, tmp_path / "out")
    cache.store(folder, "k" * 64, source)
    assert cache.fetch(folder, "k" * 64, tmp_path / "out") and (tmp_path / "out").read_bytes() == b"mlir"
    assert [p.name for p in folder.iterdir()] == ["k" * 64 + ".mlirbc"]  # no temporary files left


def test_a_folder_that_cannot_be_the_cache_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot be the export cache"):
        cache.cache_folder(blocker)
    monkeypatch.setenv(cache.ENV, str(blocker / "sub"))
    with pytest.raises(UserError, match=cache.ENV):
        cache.cache_folder(None)
    monkeypatch.delenv(cache.ENV, raising=False)
    assert cache.cache_folder(None) is None


def test_a_build_from_the_cache_runs_its_own_weights(checkpoints, tmp_path):
    """A second checkpoint of the same shape reuses the first one's export, and its bundle
    computes with its own weights: transformers' logits for it."""
    opts = BuildOptions(max_context=16, embeddings=False, export_cache=tmp_path / "cache")
    said = {0: [], 1: []}
    for seed in (0, 1):
        build_bundle(checkpoints[seed][0], tmp_path / f"b{seed}", opts, progress=said[seed].append)
    assert not any("cached" in s for s in said[0]) and any("export to MLIR: cached" in s for s in said[1])
    prompt = [1, 17, 33, 250, 9]
    with torch.no_grad():
        want = checkpoints[1][1](torch.tensor([prompt])).logits[0, -1].numpy()
    session = Session.load(tmp_path / "b1")
    got = session.run_prefill(prompt, 0, session.new_cache())
    np.testing.assert_allclose(got, want, atol=1e-4)
