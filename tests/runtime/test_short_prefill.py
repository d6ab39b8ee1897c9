"""A prompt whose uncached rest is one token runs it as a decode step, not a prefill call: the
prefill function's data-tiled matmuls pad a call's rows to a tile of 16, a decode step's take one."""

import numpy as np
import pytest

from iree_glm.runtime import Session

PROMPT = [(i * 37) % 200 + 3 for i in range(33)]  # two 16-token blocks and one more token


def _record_calls(session: Session) -> list[tuple[str, int]]:
    """(entry point, tokens) of each device call the session makes from now on."""
    calls: list[tuple[str, int]] = []
    fns = session._fns
    for name in ("prefill", "decode", "verify"):
        if name in fns:
            fns[name] = (lambda name, fn: lambda *a: calls.append((name, a[0].shape[0] * a[0].shape[1])) or fn(*a))(name, fns[name])
    return calls


@pytest.fixture(scope="module")
def plain(glm4_bundle):
    return Session.load(glm4_bundle, verify=False)


def test_one_token_after_a_cached_prefix_is_a_decode_step(glm4_bundle, plain):
    cached = Session.load(glm4_bundle, verify=False, prefix_cache=True)
    first = cached.generate(PROMPT, 6, stop_ids=())
    calls = _record_calls(cached)
    state, cache = cached.new_request(PROMPT, 6, stop_ids=()), cached.new_cache()
    logits = cached.prefill(state, cache)
    assert state.cached_tokens == 32
    assert [c for c in calls if c[0] == "prefill"] == [] and len(calls) == 1 and calls[0][1] == 1
    want = plain.run_prefill(PROMPT, 0, plain.new_cache())
    np.testing.assert_allclose(logits, want, atol=1e-4)
    assert cached.generate(PROMPT, 6, stop_ids=()).generated_ids == first.generated_ids
    assert first.generated_ids == plain.generate(PROMPT, 6, stop_ids=()).generated_ids


def test_a_one_token_prompt_is_a_decode_step(glm4_bundle, plain):
    session = Session.load(glm4_bundle, verify=False)
    calls = _record_calls(session)
    state, cache = session.new_request([7], 1, stop_ids=()), session.new_cache()
    logits = session.prefill(state, cache, 0)
    assert len(calls) == 1 and calls[0][0] != "prefill" and calls[0][1] == 1
    np.testing.assert_allclose(logits, plain.run_prefill([7], 0, plain.new_cache()), atol=1e-4)
    assert state.pos == 1


def test_longer_rests_stay_one_prefill_call(glm4_bundle):
    session = Session.load(glm4_bundle, verify=False, prefill_chunk=0)
    calls = _record_calls(session)
    session.prefill(session.new_request(PROMPT[:5], 1, stop_ids=()), session.new_cache())
    assert calls == [("prefill", 5)]
