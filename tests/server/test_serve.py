"""The OpenAI-compatible server, over real loopback sockets: answers, SSE streams, errors, a soak."""

import http.client
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from iree_glm.runtime import Session
from iree_glm.runtime.normalize import parse_normalize
from iree_glm.server.chat_format import glm4_chat_prompt
from iree_glm.server.http import BackgroundServer


@pytest.fixture(scope="module")
def served(batched_bundle):
    session = Session.load(batched_bundle, prefix_cache=True, prefix_cache_bytes=64 << 10)
    server = BackgroundServer(session)
    yield session, server
    server.close()
    session.close()


def _post(port, path, body, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", path, body if isinstance(body, (str, bytes)) else json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, r.getheader("Content-Type"), data


def _events(data: bytes) -> list:
    out = []
    for block in data.decode().split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_completion_matches_the_session(served):
    session, server = served
    want = session.generate("Hello there", 20, stop_ids=None)
    status, kind, data = _post(server.port, "/v1/completions", {"prompt": "Hello there", "max_tokens": 20, "temperature": 0})
    assert status == 200 and kind == "application/json"
    body = json.loads(data)
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == want.text
    assert body["choices"][0]["finish_reason"] == ("length" if want.stop_reason == "max_new_tokens" else "stop")
    assert body["usage"]["completion_tokens"] == len(want.generated_ids)


def test_streamed_completion_and_chat(served):
    session, server = served
    want = session.generate("Hello there", 24)
    status, kind, data = _post(server.port, "/v1/completions", {"prompt": "Hello there", "max_tokens": 24, "temperature": 0, "stream": True})
    assert status == 200 and kind.startswith("text/event-stream")
    events = _events(data)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == want.text
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    want = session.generate(glm4_chat_prompt(messages), 12)
    status, _, data = _post(server.port, "/v1/chat/completions", {"messages": messages, "max_tokens": 12, "temperature": 0, "stream": True})
    events = _events(data)
    assert status == 200 and events[-1] == "[DONE]"
    assert events[0]["object"] == "chat.completion.chunk" and events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == want.text
    status, _, data = _post(server.port, "/v1/chat/completions", {"messages": messages, "max_tokens": 12, "temperature": 0})
    body = json.loads(data)
    assert body["choices"][0]["message"] == {"role": "assistant", "content": want.text}


def test_stop_strings_and_cached_prefix(served):
    session, server = served
    prompt = "A shared system prompt, long enough for three blocks. "
    _post(server.port, "/v1/completions", {"prompt": prompt + "one", "max_tokens": 2})
    status, _, data = _post(server.port, "/v1/completions", {"prompt": prompt + "two", "max_tokens": 2})
    assert json.loads(data)["usage"]["prompt_tokens_details"]["cached_tokens"] == 48
    full = session.generate("Hello there", 30, stop_ids=()).text
    stop = next(full[i : i + 2] for i in range(3, len(full)) if full[i : i + 2].isprintable() and "\ufffd" not in full[i : i + 2])
    status, _, data = _post(server.port, "/v1/completions", {"prompt": "Hello there", "max_tokens": 30, "temperature": 0, "stop": [stop]})
    choice = json.loads(data)["choices"][0]
    assert choice["text"] == full[: full.find(stop)] and choice["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/v1/completions", {"prompt": "", "max_tokens": 5}, "empty"),
        ("/v1/completions", {"prompt": "x" * 500, "max_tokens": 5}, "context"),
        ("/v1/completions", {"prompt": "hi", "temperature": 3}, "temperature"),
        ("/v1/completions", {"prompt": "hi", "n": 0}, "'n'"),
        ("/v1/completions", {"prompt": "hi", "logprobs": 9}, "'logprobs'"),
        ("/v1/completions", {"prompt": "hi", "echo": True}, "'echo'"),
        ("/v1/completions", {"prompt": "hi", "best_of": 3}, "'best_of'"),
        ("/v1/completions", {"prompt": "hi", "frobnicate": 1}, "'frobnicate' is not supported"),
        ("/v1/completions", {"prompt": "hi", "seed": 2**64}, "'seed'"),
        ("/v1/completions", {"prompt": "hi", "logit_bias": {"99999": 5}}, "logit_bias"),
        ("/v1/completions", {"prompt": "hi", "response_format": {"type": "regex", "regex": "a["}}, "regex cannot be compiled"),
        ("/v1/completions", {"prompt": "hi", "model": "gpt-4"}, "does not exist"),
        ("/v1/completions", {"prompt": "hi", "max_tokens": -3}, "max_tokens"),
        ("/v1/completions", {"prompt": "hi", "temperature": "hot"}, "temperature"),
        ("/v1/completions", {"prompt": "hi", "top_p": 0}, "top_p"),
        ("/v1/completions", {"prompt": [1, 99999]}, "vocabulary"),
        ("/v1/completions", {"max_tokens": 5}, "prompt"),
        ("/v1/completions", "{not json", "JSON"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user"}]}, "content"),
    ],
)
def test_bad_requests_get_400_with_a_message(served, path, body, message):
    status, _, data = _post(served[1].port, path, body)
    assert status == (404 if "does not exist" in message else 400)
    assert message in json.loads(data)["error"]["message"]


def test_unknown_paths_and_methods(served):
    port = served[1].port
    assert _post(port, "/v1/nothing", {})[0] == 404
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/v1/completions")
    assert c.getresponse().status == 405
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/v1/models")
    assert json.loads(c.getresponse().read())["data"][0]["object"] == "model"


def test_soak_concurrent_clients_with_disconnects(served):
    """8 s of 6 concurrent clients; a third of the streams hang up midway. Every request must end."""
    session, server = served
    port, stop_at = server.port, time.time() + 8
    outcomes: list[str] = []
    errors: list[str] = []

    def client(seed):
        rng = random.Random(seed)
        while time.time() < stop_at:
            body = {"prompt": "".join(rng.choice("abcdef ") for _ in range(rng.randint(1, 60))),
                    "max_tokens": rng.randint(1, 40), "temperature": rng.choice([0, 0.7]), "stream": rng.random() < 0.7}
            try:
                if body["stream"] and rng.random() < 0.35:
                    s = socket.create_connection(("127.0.0.1", port), timeout=30)
                    data = json.dumps(body).encode()
                    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
                    s.recv(rng.randint(1, 400))
                    s.close()  # hang up mid-stream
                    outcomes.append("disconnected")
                    continue
                status, _, data = _post(port, "/v1/completions", body, timeout=60)
                if status != 200:
                    errors.append(f"status {status}: {data[:200]!r}")
                elif body["stream"] and _events(data)[-1] != "[DONE]":
                    errors.append("stream did not end with [DONE]")
                else:
                    outcomes.append("ok")
            except Exception as e:  # noqa: BLE001 - any client-side failure is a finding
                errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert not errors, errors[:5]
    assert outcomes.count("ok") >= 10 and outcomes.count("disconnected") >= 3
    deadline = time.time() + 10
    engine = session.engine
    while (engine.active or engine._pending) and time.time() < deadline:
        time.sleep(0.05)
    assert engine.active == 0 and not engine._pending  # nothing left running or queued
    assert session.prefix_cache.nbytes <= session.prefix_cache.budget_bytes
    assert _post(port, "/v1/completions", {"prompt": "still alive", "max_tokens": 3})[0] == 200


def test_serve_cli_listens_and_answers(batched_bundle):
    proc = subprocess.Popen(
        [sys.executable, "-m", "iree_glm.serve", str(batched_bundle), "--port", "0", "--no-verify"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        port = None
        for line in proc.stderr:  # warnings may come first
            m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "the server did not say where it listens"
        status, _, data = _post(port, "/v1/completions", {"prompt": "Hi", "max_tokens": 3})
        assert status == 200 and json.loads(data)["usage"]["completion_tokens"] >= 1
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_cli_bad_option():
    r = subprocess.run([sys.executable, "-m", "iree_glm.serve", "no-such-bundle", "--port", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "no-such-bundle" in r.stderr


def test_normalize_per_request_shares_the_cache(served):
    """Prompts differing only in whitespace / Unicode form share cached blocks when a request asks
    for normalization (the launch default here is off)."""
    _, server = served
    a = "Shared  system\tprompt,\u00a0typed ＯＮＥ way and then another; long enough. "
    b = "Shared system prompt, typed ONE way and then another; long enough. "
    cached = []
    for prompt, normalize in ((a, None), (b, None), (a, "whitespace,nfkc"), (b, True)):
        body = {"prompt": prompt + "Q?", "max_tokens": 2}
        if normalize is not None:
            body["normalize"] = normalize
        status, _, data = _post(server.port, "/v1/completions", body)
        assert status == 200
        cached.append(json.loads(data)["usage"]["prompt_tokens_details"]["cached_tokens"])
    assert cached[1] == 0  # not normalized: the two forms share nothing past "Shared "
    assert cached[3] == 64  # normalized: b's 67 bytes + "Q?" reuse a's four full blocks
    status, _, data = _post(server.port, "/v1/completions", {"prompt": "hi", "normalize": "tabs"})
    assert status == 400 and "'normalize': unknown step 'tabs'" in json.loads(data)["error"]["message"]


def test_chat_normalizes_message_contents_only(batched_bundle):
    session = Session.load(batched_bundle)
    server = BackgroundServer(session, normalizer=parse_normalize("whitespace,nfkc"))
    try:
        messages = [{"role": "system", "content": "Be\u00a0\u00a0brief."}, {"role": "user", "content": "Ｈｉ"}]
        want = session.generate(glm4_chat_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]), 6)
        status, _, data = _post(server.port, "/v1/chat/completions", {"messages": messages, "max_tokens": 6, "temperature": 0})
        assert status == 200 and json.loads(data)["choices"][0]["message"]["content"] == want.text
        assert json.loads(data)["usage"]["prompt_tokens"] == len(want.prompt_ids)
        status, _, data = _post(server.port, "/v1/chat/completions", {"messages": messages, "max_tokens": 6, "temperature": 0, "normalize": False})
        assert json.loads(data)["usage"]["prompt_tokens"] > len(want.prompt_ids)  # raw NBSPs and full-width bytes
    finally:
        server.close()
        session.close()
