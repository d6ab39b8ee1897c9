"""The HTTP/1.1 server: uvicorn (h11) running the Starlette app behind the `Guard`.

uvicorn brings keep-alive, HTTP/1.1 parsing (a bad Content-Length, an over-long request line
or header block get 400 from h11), a concurrency limit (503 past it) and an idle keep-alive
timeout. Two things it lacks for clients on a network are added by a small subclass of its
h11 protocol:

- a deadline for a request head: a connection that opens and sends nothing, or sends its
  headers byte by byte (slowloris), is closed after `header_timeout` seconds, so idle sockets
  cannot pile up; the body has its own deadline in the app (`body_timeout`);
- a client that half-closes its socket after sending a request (shutdown(SHUT_WR), as
  `nc -N` and some proxies do) still gets its response: TCP cannot tell a half-close from a
  close, so the request runs on; a stream notices a client that is really gone at its next
  write, and a non-streamed request then ends at its `max_tokens` or `timeout`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from iree_glm.errors import UserError
from iree_glm.server.app import BODY_TIMEOUT_S, MAX_BODY, OpenAIServer
from iree_glm.server.guard import Guard

HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 15
MAX_CONNECTIONS = 256
MAX_HEAD_BYTES = 32 << 10  # request line + headers


class Config(uvicorn.Config):
    """uvicorn's Config with the request-head deadline."""

    def __init__(self, app, header_timeout: float = HEADER_TIMEOUT_S, **kwargs):
        super().__init__(app, http=GuardedH11Protocol, **kwargs)
        self.header_timeout = header_timeout


class GuardedH11Protocol(H11Protocol):
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_timer = None
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.config.header_timeout, self._head_timeout)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request head arrived
            self._disarm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request's head has the same deadline

    def eof_received(self) -> bool | None:
        # True keeps the socket open for writing: the request in progress still gets its answer.
        if self.cycle is not None and not self.cycle.response_complete:
            return True
        return None

    def connection_lost(self, exc) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: a free port), or a UserError saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.setblocking(False)
    return sock


def make_app(server: OpenAIServer, api_key: str | None, allow_origins: tuple[str, ...]):
    return Guard(server.app(), api_key, allow_origins)


def make_config(app, host: str, port: int, header_timeout: float = HEADER_TIMEOUT_S, access_log: bool = False,
                max_connections: int = MAX_CONNECTIONS) -> Config:
    return Config(
        app, header_timeout=header_timeout, host=host, port=port, loop="asyncio", lifespan="off",
        timeout_keep_alive=KEEP_ALIVE_S, limit_concurrency=max_connections, h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        access_log=access_log, log_config=None, server_header=False,  # logging is the embedding program's (the CLI sets it up)
    )


class BackgroundServer:
    """The server on its own thread and event loop (for embedding and tests); `port` is bound."""

    def __init__(self, session, host: str = "127.0.0.1", port: int = 0, model_name: str | None = None, normalizer=None,
                 api_key: str | None = None, allow_origins: tuple[str, ...] = (), header_timeout: float = HEADER_TIMEOUT_S,
                 body_timeout: float = BODY_TIMEOUT_S, max_body: int = MAX_BODY, max_connections: int = MAX_CONNECTIONS):
        self.server = OpenAIServer(session, model_name or session.bundle.name, normalizer, max_body, body_timeout)
        config = make_config(make_app(self.server, api_key, allow_origins), host, port, header_timeout,
                             max_connections=max_connections)
        self._socket = bind(host, port)
        self.port = self._socket.getsockname()[1]
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._uvicorn.serve(sockets=[self._socket])),
                                        name="iree_glm-serve", daemon=True)
        self._thread.start()
        while not self._uvicorn.started and self._thread.is_alive():
            self._thread.join(0.01)

    def close(self) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(30)
        self._socket.close()
