"""A bounded soak (~15 s): many concurrent streaming clients through the openai client and raw
sockets, half of them hanging up midway, some reading slowly, with constrained requests mixed
in. Nothing may hang, and threads, open files and memory come back near where they started."""

import asyncio
import gc
import json
import os
import random
import socket
import threading
import time

import openai
import pytest

from iree_glm.runtime import Session
from iree_glm.server.http import BackgroundServer

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 99}},
          "required": ["ok", "n"], "additionalProperties": False}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


POOL_THREAD = "AnyIO worker thread"


def own_threads() -> int:
    """Threads other than AnyIO's worker pool (a bounded pool whose idle workers linger 10 s)."""
    return sum(t.name != POOL_THREAD for t in threading.enumerate())


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def served(batched_bundle):
    session = Session.load(batched_bundle, prefix_cache=True, prefix_cache_bytes=256 << 10)
    server = BackgroundServer(session, model_name="m", header_timeout=2)
    yield session, server
    server.close()
    session.close()


async def _round(port: int, seconds: float, seed: int, outcomes: list, errors: list) -> None:
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=60)
    rng = random.Random(seed)
    stop_at = time.time() + seconds
    try:
        while time.time() < stop_at:
            kind = rng.choice(["stream", "hangup", "slow", "json", "plain"])
            try:
                if kind == "json":
                    r = await client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": "json"}], max_tokens=60, temperature=1.0, seed=rng.randrange(1000),
                        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}})
                    assert json.loads(r.choices[0].message.content).keys() == {"ok", "n"}
                elif kind == "plain":
                    r = await client.completions.create(model="m", prompt="soak " * rng.randint(1, 20), max_tokens=rng.randint(1, 20))
                    assert r.choices[0].finish_reason in ("stop", "length")
                else:
                    stream = await client.completions.create(model="m", prompt="stream " * rng.randint(1, 10), max_tokens=rng.randint(5, 60),
                                                             temperature=0.7, stream=True)
                    count = 0
                    async for _ in stream:
                        count += 1
                        if kind == "hangup" and count == 3:
                            break
                        if kind == "slow":
                            await asyncio.sleep(0.02)
                    await stream.close()
                outcomes.append(kind)
            except Exception as e:  # noqa: BLE001 - every client-side failure is a finding
                errors.append(f"{kind}: {type(e).__name__}: {e}")
    finally:
        await client.close()


def _raw_hangups(port: int, seconds: float, outcomes: list) -> None:
    """Sockets that send a streaming request and close after a few bytes (RST, no goodbye)."""
    stop_at = time.time() + seconds
    while time.time() < stop_at:
        body = json.dumps({"prompt": "raw", "max_tokens": 40, "stream": True}).encode()
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        s.recv(200)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        outcomes.append("raw")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the openai client closing a stream mid-iteration
def test_soak(served):
    session, server = served
    # Warm up (engine thread, worker threads, grammar vocabulary, allocator) before the baseline.
    asyncio.run(_round(server.port, 1.0, 99, [], []))
    time.sleep(0.5)
    gc.collect()
    threads0, fds0, rss0 = own_threads(), fds(), rss_mb()

    outcomes: list[str] = []
    errors: list[str] = []

    async def main():
        await asyncio.gather(*(_round(server.port, 12.0, seed, outcomes, errors) for seed in range(10)))

    raw = threading.Thread(target=_raw_hangups, args=(server.port, 12.0, outcomes))
    raw.start()
    t0 = time.time()
    asyncio.run(asyncio.wait_for(main(), 90))
    raw.join(60)
    assert not raw.is_alive() and time.time() - t0 < 90, "a client hung"
    assert not errors, errors[:5]
    for kind in ("stream", "hangup", "slow", "json", "plain", "raw"):
        assert outcomes.count(kind) >= 3, (kind, outcomes.count(kind))

    deadline = time.time() + 15
    engine = session.engine
    while (engine.active or engine._pending) and time.time() < deadline:
        time.sleep(0.05)
    assert engine.active == 0 and not engine._pending  # every request ended, none stuck in the engine
    time.sleep(2.5)  # past the header timeout: keep-alive sockets of the closed clients are gone
    gc.collect()
    assert own_threads() <= threads0, [t.name for t in threading.enumerate()]
    pool = [t for t in threading.enumerate() if t.name == POOL_THREAD]  # AnyIO's workers: idle ones exit after 10 s
    assert len(pool) <= 40  # anyio.to_thread's default limit
    assert fds() <= fds0 + 4
    assert rss_mb() < rss0 + 64, (rss0, rss_mb())
    assert server.server.requests_cancelled >= 3
