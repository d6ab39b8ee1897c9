"""A compiled bundle generates exactly what transformers generates from the same checkpoint."""


import numpy as np
import pytest
import torch

from iree_glm.bundle.manifest import read_manifest
from iree_glm.runtime import SamplingParams, Session


@pytest.fixture(scope="module")
def session(glm4_bundle):
    return Session.load(glm4_bundle)


def test_manifest_lists_everything(glm4_bundle):
    m = read_manifest(glm4_bundle)
    assert m.format_version == 3
    assert {"model.vmfb", "weights.irpa", "tokenizer.json", "config.json"} <= set(m.files)
    assert [e.name for e in m.entry_points] == ["prefill", "decode", "embed", "verify"]
    assert m.modules[0].flags and m.versions["iree-base-compiler"] == "3.13.0"
    # Weights live in the parameter archive, not in the module.
    assert (glm4_bundle / "model.vmfb").stat().st_size < (glm4_bundle / "weights.irpa").stat().st_size


def test_greedy_matches_transformers_generate(session, glm4_checkpoint):
    hf = glm4_checkpoint[1]
    prompt = [5, 17, 99, 3, 250, 42, 7]
    with torch.no_grad():
        ref = hf.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=0)
    expected = ref[0, len(prompt):].tolist()
    result = session.generate(prompt, max_new_tokens=40, stop_ids=())
    assert result.generated_ids == expected
    assert result.stop_reason == "max_new_tokens"
    assert result.prefill_ms > 0 and result.decode_tok_s > 0


def test_prefill_logits_match_transformers(session, glm4_checkpoint):
    hf = glm4_checkpoint[1]
    prompt = list(range(3, 60))
    with torch.no_grad():
        ref = hf(torch.tensor([prompt])).logits[0, -1].numpy()
    logits = session.run_prefill(prompt, 0, session.new_cache())
    assert np.abs(logits - ref).max() < 1e-4


def test_stream_yields_text_pieces_that_add_up(session):
    gen = session.stream("Hello there", max_new_tokens=12, stop_ids=())
    pieces = [ev.text for ev in gen]
    assert len(pieces) == 12
    assert "".join(pieces) == gen.result.text
    assert gen.result.text == session.tokenizer.decode(gen.result.generated_ids)


def test_sampling_is_seeded(session):
    params = SamplingParams(temperature=0.9, top_k=20, top_p=0.9, seed=7)
    a = session.generate([1, 2, 3], 16, params, stop_ids=()).generated_ids
    b = session.generate([1, 2, 3], 16, params, stop_ids=()).generated_ids
    c = session.generate([1, 2, 3], 16, SamplingParams(temperature=0.9, top_k=20, top_p=0.9, seed=8), stop_ids=()).generated_ids
    assert a == b and a != c


def test_generation_stops_when_context_is_full(session):
    prompt = list(range(1, 120))
    result = session.generate(prompt, max_new_tokens=50, stop_ids=())
    assert result.stop_reason == "context_full"
    assert len(prompt) + len(result.generated_ids) == 128 + 1  # the last token needs no cache slot
