"""Continuous batching and the async API: same tokens as one-at-a-time, cancellation, timeouts, stops."""

import asyncio
import time

import numpy as np
import pytest

from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.errors import RequestError
from iree_glm.runtime import SamplingParams, Session
from iree_glm.runtime.async_api import AsyncSession
from iree_glm.runtime.batching import BatchEngine
from iree_glm.runtime.request import StopStrings
from iree_glm.transforms.quantize import QuantSpec

from ..helpers import run_in_threads


@pytest.fixture(scope="module")
def session(batched_bundle):
    s = Session.load(batched_bundle)
    yield s
    s.close()


def _prompts(n, seed=0):
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(0, 256, int(rng.integers(3, 40)))] for _ in range(n)]


def test_stop_strings_hold_back_a_possible_start():
    f = StopStrings(("STOP", "xy"))
    assert f.push("abcS") == ("abc", False)
    assert f.push("T") == ("", False)
    assert f.push("x") == ("ST", False)  # "STx" is no longer "STOP", but "x" may start "xy"
    assert f.held == "x"
    assert f.push("z") == ("xz", False)
    assert f.push("..xy!") == ("..", True)
    with pytest.raises(RequestError):
        StopStrings(("",))


def test_batched_threads_match_one_at_a_time(session):
    prompts = _prompts(7)
    want = [session.generate(p, 20, stop_ids=()).generated_ids for p in prompts]
    engine = BatchEngine(session, gather_ms=20)

    def work(i):
        time.sleep(0.002 * i)
        return [e.token_id for e in engine.run(session.new_request(prompts[i], 20, stop_ids=()))]

    got = run_in_threads(work, len(prompts))
    engine.close()
    assert got == want
    assert max(engine.stats.batch_sizes) == 4  # 7 requests shared 4-row steps
    assert engine.stats.rows_decoded == 7 * 19
    assert engine.stats.steps < 7 * 19


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_quantized_batched_steps_are_each_requests_own_step(glm4_checkpoint, tmp_path_factory, quant):
    """int8 / int4 batched steps of up to 4 rows call the decode kernels' few-row form
    (passes/dequant_matmul.py, bit for bit per row in tests/passes): each row of a step is its
    own request's next-token logits, close to that request decoding alone."""
    out = tmp_path_factory.mktemp("bundles") / f"glm4-batched-{quant}"
    build_bundle(glm4_checkpoint[0], out, BuildOptions(max_context=128, quant=QuantSpec(quant), decode_batch_sizes=(1, 2, 4)))
    session = Session.load(out)
    prompts = _prompts(4, seed=3)
    alone = []
    for p in prompts:
        cache = session.new_cache(1)
        session.run_prefill(p, 0, cache, 0)
        alone.append(session.decode([p[-1]], [len(p)], cache, [0])[0])
    for n in (2, 4):
        cache = session.new_cache(n)
        for i in range(n):
            session.run_prefill(prompts[i], 0, cache, i)
        batched = session.decode([p[-1] for p in prompts[:n]], [len(p) for p in prompts[:n]], cache, list(range(n)))
        for i in range(n):
            assert np.abs(batched[i] - alone[i]).max() <= 1e-4 * np.abs(alone[i]).max(), (n, i)
    session.close()


def test_sync_api_is_thread_safe(session):
    prompts = _prompts(4, seed=1)
    want = [session.generate(p, 15, stop_ids=()).generated_ids for p in prompts]
    got = run_in_threads(lambda i: session.generate(prompts[i], 15, stop_ids=()).generated_ids, 4)
    assert got == want


def test_async_streams_match_sync_and_share_steps(session):
    prompts = _prompts(5, seed=2)
    params = SamplingParams(temperature=0.8, top_k=40, seed=7)
    want = [session.generate(p, 18, params, stop_ids=()) for p in prompts]

    async def one(p):
        gen = session.stream_async(p, 18, params, stop_ids=())
        ids, text = [], ""
        async for event in gen:
            ids.append(event.token_id)
            text += event.text
        assert gen.result.text == text
        return ids

    async def main():
        return await asyncio.gather(*(one(p) for p in prompts))

    steps = session.engine.stats.steps
    got = asyncio.run(main())
    assert got == [w.generated_ids for w in want]
    assert session.engine.stats.steps - steps < 5 * 17


def test_async_cancellation_timeout_and_stops(session):
    a = AsyncSession(session)
    full = session.generate("Hello there", 30, stop_ids=())

    async def main():
        # Leaving the loop early cancels the request; the engine keeps serving others.
        gen = a.stream("Hello there", 100, stop_ids=())
        async for _ in gen:
            break
        await gen.aclose()
        # Cancelling the consuming task.
        task = asyncio.ensure_future(a.generate("Hello there", 100, stop_ids=()))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(TimeoutError):
            await a.generate([1, 2, 3], 100, stop_ids=(), timeout=0.001)
        by_id = await a.generate("Hello there", 30, stop_ids=(full.generated_ids[4],))
        by_len = await a.generate("Hello there", 7, stop_ids=())
        return by_id, by_len, await a.generate("Hello there", 30, stop_ids=())

    by_id, by_len, again = asyncio.run(main())
    assert by_id.stop_reason == "eos" and by_id.generated_ids == full.generated_ids[: full.generated_ids.index(full.generated_ids[4]) + 1]
    assert by_len.stop_reason == "max_new_tokens" and by_len.generated_ids == full.generated_ids[:7]
    assert again.generated_ids == full.generated_ids
    deadline = time.time() + 5
    while session.engine.active and time.time() < deadline:
        time.sleep(0.01)
    assert session.engine.active == 0  # cancelled requests freed their rows


def test_async_bad_request_raises_at_once(session):
    with pytest.raises(RequestError, match="empty"):
        session.stream_async([], 5)
    with pytest.raises(RequestError, match="context"):
        session.stream_async([1] * 128, 5)
