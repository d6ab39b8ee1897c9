"""Hostile-but-realistic clients: huge bodies, idle and slow connections, half-closes,
malformed numbers and text, bad HTTP framing, browsers from other origins, missing API keys.
Each answer is a 4xx with a message or the full response, never a 500 or a stall."""

import http.client
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from iree_glm.bundle.tokenizer import TextTokenizer
from iree_glm.runtime import Session
from iree_glm.server.http import BackgroundServer


@pytest.fixture(scope="module")
def session(batched_bundle):
    s = Session.load(batched_bundle)
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(session):
    srv = BackgroundServer(session, model_name="m", header_timeout=0.5, body_timeout=0.5)
    yield srv
    srv.close()


def raw(port: int, data: bytes, shut_write: bool = False, timeout: float = 30) -> bytes:
    """Send bytes, read until the server closes (or the response is complete); returns what came."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    if shut_write:
        s.shutdown(socket.SHUT_WR)
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        out += chunk
        if b"\r\n\r\n" in out:
            head, body = out.split(b"\r\n\r\n", 1)
            m = re.search(rb"(?i)content-length: (\d+)", head)
            if m and len(body) >= int(m.group(1)):
                break
    s.close()
    return out


def request(path: str, body: bytes, headers: str = "Content-Type: application/json\r\n") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {len(body)}\r\n\r\n").encode() + body


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def post(port, path, body, headers=None, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", path, body if isinstance(body, bytes) else json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict(r.getheaders()), data


@pytest.mark.parametrize("body, field", [
    (b'{"prompt": "hi", "temperature": NaN}', "NaN"),
    (b'{"prompt": "hi", "top_k": Infinity}', "Infinity"),
    (b'{"prompt": "hi", "top_p": -Infinity}', "Infinity"),
    (b'{"prompt": "\\ud800 lone surrogate"}', "'prompt' holds a lone surrogate"),
    (b'{"prompt": "hi", "stop": ["\\udfff"]}', "'stop' holds a lone surrogate"),
    (b'{"prompt": "hi", "top_k": 1e400}', "'top_k'"),
    (b'[' * 100000 + b']' * 100000, "JSON"),
])
def test_malformed_numbers_and_text_are_400(server, body, field):
    status, _, data = post(server.port, "/v1/completions", body)
    assert status == 400, data
    assert field in json.loads(data)["error"]["message"]


def test_negative_seed_is_served(server):
    status, _, data = post(server.port, "/v1/completions", {"prompt": "hi", "seed": -1, "temperature": 1, "max_tokens": 3})
    assert status == 200 and json.loads(data)["choices"][0]["finish_reason"] in ("stop", "length")


def test_bad_http_framing_is_400(server):
    assert status_of(raw(server.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")) == 400
    long_url = raw(server.port, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(long_url) in (400, 404, 414, 431) and len(long_url) < 1000
    assert status_of(raw(server.port, b"GARBAGE\r\n\r\n")) == 400


def test_idle_and_slow_connections_are_closed(server):
    """A connection that sends nothing, or its head byte by byte, is closed after header_timeout;
    a body that stalls gets 408. The process's open files come back to where they were."""
    fds = len(os.listdir("/proc/self/fd"))
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
    slow = socket.create_connection(("127.0.0.1", server.port))
    t = time.time()
    for ch in b"POST /v1/completions HTTP/1.1\r\n":
        try:
            slow.send(bytes([ch]))
        except OSError:
            break
        time.sleep(0.05)
    for s in idle + [slow]:
        s.settimeout(5)
        assert s.recv(10) == b""  # closed by the server
        s.close()
    assert time.time() - t < 5
    stalled = raw(server.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pro")
    assert status_of(stalled) == 408 and b"did not arrive" in stalled
    deadline = time.time() + 5
    while len(os.listdir("/proc/self/fd")) > fds + 2 and time.time() < deadline:
        time.sleep(0.05)
    assert len(os.listdir("/proc/self/fd")) <= fds + 2


def test_half_closed_client_gets_the_whole_answer(server, session):
    want = session.generate("Half closed", 12)
    body = json.dumps({"prompt": "Half closed", "max_tokens": 12, "temperature": 0}).encode()
    response = raw(server.port, request("/v1/completions", body), shut_write=True)
    assert status_of(response) == 200
    choice = json.loads(response.split(b"\r\n\r\n", 1)[1])["choices"][0]
    assert choice["text"] == want.text and choice["finish_reason"] == ("length" if want.stop_reason == "max_new_tokens" else "stop")
    body = json.dumps({"prompt": "Half closed", "max_tokens": 12, "temperature": 0, "stream": True}).encode()
    streamed = raw(server.port, request("/v1/completions", body), shut_write=True).decode()
    assert streamed.count("data: ") >= 2 and "[DONE]" in streamed and '"cancelled"' not in streamed


def test_huge_bodies_do_not_stall_the_event_loop(session):
    """Three ~8 MiB prompts at once: /health keeps answering within a fraction of a second."""
    server = BackgroundServer(session, model_name="m")  # the default body timeout: uploads under load take a while
    big = json.dumps({"prompt": "word " * ((8 << 20) // 5 - 100)}).encode()
    assert len(big) < 8 << 20
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(post(server.port, "/v1/completions", big)[0])) for _ in range(3)]
    for t in threads:
        t.start()
    worst = 0.0
    while any(t.is_alive() for t in threads):
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        t0 = time.perf_counter()
        c.request("GET", "/health")
        assert c.getresponse().status == 200
        worst = max(worst, time.perf_counter() - t0)
        c.close()
    for t in threads:
        t.join()
    try:
        assert answers == [400, 400, 400] and worst < 0.5
        status, _, data = post(server.port, "/v1/completions", b'{"prompt": "' + b"x" * ((8 << 20) + 1) + b'"}')
        assert status == 413 and "over" in json.loads(data)["error"]["message"]
    finally:
        server.close()


def test_tokenizing_releases_the_gil(batched_bundle):
    tok = TextTokenizer(batched_bundle / "tokenizer.json")
    ticks, done = [], threading.Event()

    def tick():
        while not done.is_set():
            t0 = time.perf_counter()
            time.sleep(0.005)
            ticks.append(time.perf_counter() - t0)

    th = threading.Thread(target=tick)
    th.start()
    t0 = time.perf_counter()
    tok.encode("some words " * 100_000)
    spent = time.perf_counter() - t0
    done.set()
    th.join()
    assert spent > 0.1 and max(ticks) < spent / 2  # the other thread ran meanwhile


def test_keep_alive_serves_many_requests_on_one_connection(server):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    socks = []
    for i in range(3):
        c.request("POST", "/v1/completions", json.dumps({"prompt": f"again {i}", "max_tokens": 2}), {"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200 and r.getheader("connection") != "close"
        r.read()
        socks.append(c.sock)
    assert socks[0] is not None and socks.count(socks[0]) == 3  # http.client reconnects only if the server closed
    c.close()


def test_disconnects_log_no_tracebacks(server, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(request("/v1/completions", json.dumps({"prompt": "bye", "max_tokens": 50, "stream": True}).encode()))
        s.recv(100)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
        s.close()
    time.sleep(0.5)
    assert post(server.port, "/v1/completions", {"prompt": "still here", "max_tokens": 2})[0] == 200
    assert not [r for r in caplog.records if r.exc_info or "Error" in r.getMessage()], [r.getMessage() for r in caplog.records]
    # the logs do reach caplog: a malformed request is logged (as a warning, one line)
    raw(server.port, b"GARBAGE\r\n\r\n")
    assert any("Invalid HTTP request" in r.getMessage() for r in caplog.records)


def test_api_key_origin_and_content_type(session):
    srv = BackgroundServer(session, model_name="m", api_key="sekret", allow_origins=("http://ok.example",))
    try:
        body = {"prompt": "hi", "max_tokens": 2}
        status, headers, data = post(srv.port, "/v1/completions", body)
        assert status == 401 and "API key" in json.loads(data)["error"]["message"]
        assert post(srv.port, "/v1/completions", body, {"Authorization": "Bearer wrong"})[0] == 401
        auth = {"Authorization": "Bearer sekret"}
        assert post(srv.port, "/v1/completions", body, auth)[0] == 200
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        c.request("GET", "/health")
        assert c.getresponse().status == 200  # probes need no key
        # A web page elsewhere posting text/plain (no preflight in a browser): refused, nothing runs.
        data = json.dumps(body).encode()
        evil = raw(srv.port, request("/v1/completions", data, "Origin: http://evil.example\r\nContent-Type: text/plain\r\nAuthorization: Bearer sekret\r\n"))
        assert status_of(evil) == 403 and b"evil.example" in evil
        plain = raw(srv.port, request("/v1/completions", data, "Content-Type: text/plain\r\nAuthorization: Bearer sekret\r\n"))
        assert status_of(plain) == 415
        status, headers, _ = post(srv.port, "/v1/completions", body, {**auth, "Origin": "http://ok.example"})
        assert status == 200 and headers["access-control-allow-origin"] == "http://ok.example"
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        c.request("OPTIONS", "/v1/completions", headers={"Origin": "http://ok.example", "Access-Control-Request-Method": "POST"})
        r = c.getresponse()
        assert r.status == 204 and "authorization" in r.getheader("access-control-allow-headers")
    finally:
        srv.close()


def test_cli_binds_loopback_and_warns_when_wider_without_a_key(batched_bundle):
    proc = subprocess.Popen([sys.executable, "-m", "iree_glm.serve", str(batched_bundle), "--port", "0", "--no-verify", "--host", "0.0.0.0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "serving" in line:
                break
        assert any(line.startswith("warning:") and "without an API key" in line for line in lines), lines
    finally:
        proc.terminate()
        proc.wait(10)
    from iree_glm.cli.serve import parse_args

    assert parse_args([str(batched_bundle)]).host == "127.0.0.1"
