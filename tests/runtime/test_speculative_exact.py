"""Greedy speculative decoding is plain decoding bit for bit on the 330M shapes (2 of its 24
layers, seeded random weights: 32768-way logits with many near-ties, where a last-bit
difference between verify and decode flips tokens). An oracle draft proposes plain decoding's
own continuation: every token must be accepted and the output must be plain decoding's."""

import numpy as np
import pytest

from iree_glm.bundle.model_config import ModelConfig
from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.frontend.checkpoint import random_model, write_checkpoint
from iree_glm.runtime import Session
from iree_glm.runtime.drafts import Proposal
from iree_glm.transforms.quantize import QuantSpec

# The 330M config of tools/bench.py with 2 layers.
SHAPE = dict(hidden_size=1024, intermediate_size=2816, num_layers=2, num_heads=16, num_kv_heads=2, head_dim=64, vocab_size=32768)
TOKENS = 48
PROMPTS = [[(i * 104729 + 7) % 32768 for i in range(1, 41)], [(i * 7919 + 13) % 32768 for i in range(24)] * 2, [17, 4242, 99]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt330") / "glm4-330m-2l"
    cfg = ModelConfig(family="glm4", attention_bias=True, partial_rotary_factor=0.5, max_position_embeddings=4096, **SHAPE)
    write_checkpoint(random_model(cfg, seed=0), path)
    return path


# Quantization and extra compile flags: the host's best kernel sets (AMX / AVX-512 here), and an
# AVX2-only target (its verify tiles rows by 8: 7 exact rows, k <= 6, as on the AVX-512 hosts).
@pytest.fixture(scope="module", params=[("int8", ()), ("int4", ()), ("int4", ("--iree-llvmcpu-target-cpu=haswell",))],
                ids=["int8", "int4", "int4-avx2"])
def bundle(request, checkpoint, tmp_path_factory):
    quant, flags = request.param
    out = tmp_path_factory.mktemp("b330") / f"{quant}{'-avx2' if flags else ''}"
    build_bundle(checkpoint, out, BuildOptions(max_context=128, quant=QuantSpec(quant, group_size=32), extra_flags=flags))
    return out


class Oracle:
    """Proposes the recorded plain continuation of each prompt: acceptance must be 1."""

    name = "oracle"

    def __init__(self, runs: dict[tuple, list[int]]):
        self.runs = runs  # prompt -> plain greedy tokens

    def start(self, sampling):
        return self

    def propose(self, context, k):
        for prompt, tokens in self.runs.items():
            if tuple(context[: len(prompt)]) == prompt:
                done = len(context) - len(prompt)
                return Proposal(tokens[done : done + k])
        raise AssertionError("unknown prompt")

    def accepted(self, context_length, kept):
        pass


def test_oracle_draft_is_plain_decoding(bundle, monkeypatch):
    """k by acceptance alone: the cost budget judges rounds by their measured time, and on a
    loaded machine one slow early round pauses the oracle for the rest of these 48 tokens
    (tests/runtime/test_speculative.py tests the budget)."""
    from iree_glm.runtime import speculative

    monkeypatch.setattr(speculative.AdaptiveK, "timed", lambda self, proposed, seconds: None)
    plain = Session.load(bundle, verify=False)
    runs = {tuple(p): plain.generate(p, TOKENS, stop_ids=()).generated_ids for p in PROMPTS}
    spec = Session.load(bundle, verify=False, draft=Oracle(runs), draft_tokens=6)
    for prompt in PROMPTS:
        got = spec.generate(prompt, TOKENS, stop_ids=())
        assert got.generated_ids == runs[tuple(prompt)], f"left plain decoding after {_common(got.generated_ids, runs[tuple(prompt)])} tokens"
        assert got.acceptance_rate == 1.0 and got.tokens_per_target_call > 1.5


def test_fp32_keeps_decode_and_the_margin(checkpoint, tmp_path_factory, monkeypatch):
    """fp32 bundles are not exact by construction (docs/speculative.md): no exact rows, decode
    steps run `decode`, and the oracle draft still gives plain decoding's tokens (the margin
    sends close rows to decode steps). k by acceptance alone: an fp32 verify call costs ~1.5
    decode steps, so on a loaded machine the cost budget may pause the oracle after a round."""
    from iree_glm.runtime import speculative

    monkeypatch.setattr(speculative.AdaptiveK, "timed", lambda self, proposed, seconds: None)
    out = tmp_path_factory.mktemp("b330") / "fp32"
    build_bundle(checkpoint, out, BuildOptions(max_context=128))
    plain = Session.load(out, verify=False)
    assert plain.exact_verify_rows == 0
    runs = {tuple(p): plain.generate(p, TOKENS, stop_ids=()).generated_ids for p in PROMPTS}
    spec = Session.load(out, verify=False, draft=Oracle(runs), draft_tokens=6)
    for prompt in PROMPTS:
        got = spec.generate(prompt, TOKENS, stop_ids=())
        assert got.generated_ids == runs[tuple(prompt)], f"left plain decoding after {_common(got.generated_ids, runs[tuple(prompt)])} tokens"
        assert got.acceptance_rate > 0.5


def test_verify_rows_are_decode_steps_bit_for_bit(bundle):
    """Every row of one verify call (2..the bundle's exact rows) equals, bit for bit, the logits
    of the decode step fed the same tokens one by one, and leaves the same KV cache."""
    session = Session.load(bundle, verify=False)
    rows = session.exact_verify_rows
    assert rows >= 2
    prompt, extension = PROMPTS[0], [(i * 31 + 5) % 32768 for i in range(rows)]

    def prefilled():
        cache = session.new_cache()
        session.run_prefill(prompt, 0, cache)
        return cache

    cache = prefilled()
    steps = np.stack([session.decode([t], [len(prompt) + i], cache)[0] for i, t in enumerate(extension)])
    want_kv = cache.read(0, len(prompt) + rows)
    for n in range(2, rows + 1):
        cache = prefilled()
        got = session.verify(extension[:n], len(prompt), cache)
        assert np.array_equal(got, steps[:n]), f"{n} rows: max difference {np.abs(got - steps[:n]).max()}"
        k, v = cache.read(0, len(prompt) + n)
        assert np.array_equal(k, want_kv[0][..., : len(prompt) + n, :]) and np.array_equal(v, want_kv[1][..., : len(prompt) + n, :])


def _common(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def test_prompt_lookup_chunks_context_end_stops_and_batching(bundle):
    """Prompt lookup on the exact bundle: chunked prefill, a context that fills while drafts are
    checked, a stop id, the batching engine (a request alone speculates): plain decoding's
    tokens every time."""
    from iree_glm.runtime.batching import BatchEngine

    plain = Session.load(bundle, verify=False, prefill_chunk=16)
    spec = Session.load(bundle, verify=False, prefill_chunk=16, draft="prompt-lookup", draft_tokens=8)
    repeat = PROMPTS[1] * 2  # 96 tokens: the context (128) ends during the generation
    stop = plain.generate(PROMPTS[1], TOKENS, stop_ids=()).generated_ids[9]
    for prompt, stop_ids, reason in ((repeat, (), "context_full"), (PROMPTS[0], (), "max_new_tokens"), (PROMPTS[1], (stop,), "eos")):
        want = plain.generate(prompt, TOKENS, stop_ids=stop_ids)
        got = spec.generate(prompt, TOKENS, stop_ids=stop_ids)
        assert (got.generated_ids, got.stop_reason) == (want.generated_ids, reason)
        assert got.acceptance_rate is not None
    engine = BatchEngine(spec, gather_ms=0)
    try:
        alone = [e.token_id for e in engine.run(spec.new_request(repeat, 24, stop_ids=()))]
    finally:
        engine.close()
    assert alone == plain.generate(repeat, 24, stop_ids=()).generated_ids


def test_bundle_draft_of_itself(bundle, monkeypatch):
    """A draft bundle (here the target itself): the output is plain decoding's. (Not every
    proposal is kept: the draft catches up on accepted tokens with a prefill call, whose KV is
    not a decode step's, so its later guesses may differ from the target's choices.)"""
    from iree_glm.runtime import speculative

    monkeypatch.setattr(speculative.AdaptiveK, "timed", lambda self, proposed, seconds: None)  # a target-sized draft would pause
    plain = Session.load(bundle, verify=False)
    spec = Session.load(bundle, verify=False, draft=bundle, draft_tokens=6)
    got = spec.generate(PROMPTS[0], 32, stop_ids=())
    assert got.generated_ids == plain.generate(PROMPTS[0], 32, stop_ids=()).generated_ids
    assert got.acceptance_rate > 0.5
