"""Our export-friendly model against transformers' eager model on the same checkpoint."""

import pytest
import torch

from iree_glm.checkpoint import load_model, open_checkpoint

from .helpers import VARIANTS, write_hf_checkpoint


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logits_match_transformers(variant, tmp_path):
    hf = write_hf_checkpoint(variant, tmp_path, seed=1)
    ours = load_model(open_checkpoint(tmp_path))
    ids = torch.randint(0, 257, (1, 23), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(ids).logits
        k, v = ours.empty_cache(1, 64)
        full, _, _ = ours.all_logits(ids, torch.zeros(1, dtype=torch.long), k, v)
        # The same sequence in two chunks through the cache (how prefix reuse works).
        _, k, v = ours.all_logits(ids[:, :10], torch.zeros(1, dtype=torch.long), *ours.empty_cache(1, 64))
        tail, _, _ = ours.all_logits(ids[:, 10:], torch.tensor([10]), k, v)
    assert (full - ref).abs().max().item() < 1e-4
    assert (tail - ref[:, 10:]).abs().max().item() < 1e-4
    assert ref.std() > 0.1  # not a degenerate model


def test_sharded_checkpoint_loads(tmp_path):
    hf = write_hf_checkpoint("glm4_gqa", tmp_path / "one", seed=2)
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    a = load_model(open_checkpoint(tmp_path / "one")).state_dict()
    b = load_model(open_checkpoint(tmp_path / "sharded")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
