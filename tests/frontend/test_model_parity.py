"""Our export-friendly model against transformers' eager model on the same checkpoint."""

import pytest
import torch

from iree_glm.frontend.checkpoint import load_model, open_checkpoint

from ..helpers import VARIANTS, write_hf_checkpoint


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


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fused_qkv_decode_steps_match_transformers(variant, tmp_path):
    """What bundles compute: q/k/v as one projection (biases included) and one-token steps
    through `decode_attention`, reading the first n cache positions of row 1 of 3."""
    hf = write_hf_checkpoint(variant, tmp_path, seed=3)
    ours = load_model(open_checkpoint(tmp_path)).fuse_qkv()
    attn = ours.model.layers[0].self_attn
    assert not hasattr(attn, "q_proj") and (attn.qkv_proj.bias is not None) == ours.cfg.attention_bias
    ids = torch.randint(0, 257, (1, 15), generator=torch.Generator().manual_seed(1))
    cfg = ours.cfg
    shape = (3, cfg.num_kv_heads, 32, cfg.head_dim)
    caches = [torch.zeros(shape) for _ in range(2 * cfg.num_layers)]
    slot = torch.tensor([1])
    with torch.no_grad():
        ref = hf(ids).logits[0]
        got = [ours(ids[:, :9], torch.tensor([0]), slot, torch.arange(9), *caches)[0]]
        for p in range(9, 15):  # attend over 16 keys, more than written: the mask hides the rest
            got.append(ours(ids[:, p : p + 1], torch.tensor([p]), slot, torch.arange(16), *caches)[0])
    assert (torch.stack(got) - ref[8:]).abs().max().item() < 1e-4
    assert all(not c[[0, 2]].any() for c in caches)  # other rows untouched


def test_sharded_checkpoint_loads(tmp_path):
    hf = write_hf_checkpoint("glm4_gqa", tmp_path / "one", seed=2)
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    a = load_model(open_checkpoint(tmp_path / "one")).state_dict()
    b = load_model(open_checkpoint(tmp_path / "sharded")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
