"""Short prefill calls of a small local-task bundle run on a second, single-threaded (local-sync)
instance of its module in the calling thread, over the same KV buffers (Session._load_inline):
the same bits as the task executor's call, without its hand-offs between threads."""

import numpy as np
import pytest

from iree_glm.runtime import Session
from iree_glm.runtime import session as session_module

PROMPT = [(i * 37) % 200 + 3 for i in range(40)]


def _record(session: Session) -> list[tuple[str, int]]:
    """(module, tokens) of each prefill call from now on: "task" (the main module) or "inline"."""
    calls: list[tuple[str, int]] = []
    for name, module in (("task", session._main), ("inline", session._inline)):
        fn = module.fns["prefill"]
        module.fns["prefill"] = (lambda name, fn: lambda *a: calls.append((name, a[0].shape[1])) or fn(*a))(name, fn)
    return calls


@pytest.fixture(scope="module")
def task_only(glm4_bundle):
    """The same bundle with every prefill call on the task executor."""
    session = Session.load(glm4_bundle, verify=False, prefill_chunk=0)
    session._inline = None
    return session


def test_short_calls_run_inline_with_the_same_bits(glm4_bundle, task_only):
    s = Session.load(glm4_bundle, verify=False, prefill_chunk=0)
    assert s.driver == "local-task" and s._inline is not None and s._inline.driver == "local-sync"
    calls = _record(s)
    cache, ref = s.new_cache(2), task_only.new_cache(2)
    s.run_prefill(PROMPT, 0, cache, slot=1)
    task_only.run_prefill(PROMPT, 0, ref, slot=1)
    tail = s.run_prefill([5, 6, 7], len(PROMPT), cache, slot=1)  # reads what the task executor's call wrote
    assert calls == [("task", len(PROMPT)), ("inline", 3)]
    np.testing.assert_array_equal(tail, task_only.run_prefill([5, 6, 7], len(PROMPT), ref, slot=1))
    for got, want in zip(cache.read(1, len(PROMPT) + 3), ref.read(1, len(PROMPT) + 3)):
        np.testing.assert_array_equal(got, want)  # the inline call wrote the same KV into the shared buffers
    assert s.generate(PROMPT[:9], 6, stop_ids=()).generated_ids == task_only.generate(PROMPT[:9], 6, stop_ids=()).generated_ids
    assert calls[-1] == ("inline", 9)


def test_the_tokens_after_a_restored_prefix_run_inline(glm4_bundle, task_only):
    s = Session.load(glm4_bundle, verify=False, prefix_cache=True, prefill_chunk=0)
    s.generate(PROMPT, 4, stop_ids=())
    calls = _record(s)
    state = s.new_request(PROMPT[:32] + [9, 9, 9], 4, stop_ids=())
    logits = s.prefill(state, s.new_cache())
    assert state.cached_tokens == 32 and calls == [("inline", 3)]
    np.testing.assert_array_equal(logits, task_only.run_prefill(PROMPT[:32] + [9, 9, 9], 0, task_only.new_cache()))


def test_no_inline_module_where_it_would_not_pay(glm4_bundle, monkeypatch):
    assert Session.load(glm4_bundle, verify=False, driver="local-sync")._inline is None  # already one thread
    monkeypatch.setattr(session_module, "INLINE_MAX_BYTES", 0)  # a larger model: its own weight copy, long calls
    assert Session.load(glm4_bundle, verify=False)._inline is None
