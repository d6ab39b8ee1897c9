"""`python -m iree_glm.serve BUNDLE [--host 127.0.0.1 --port N]`: an OpenAI-compatible local server.

Endpoints: `POST /v1/completions`, `POST /v1/chat/completions` (both with `"stream": true`
for server-sent events), `GET /v1/models`, `GET /health`. Requests are served by the
session's batching engine, so concurrent clients share decode steps; a client that
disconnects has its request cancelled. Bad requests get HTTP 400 with a JSON error message.
With `--normalize` (or a request's `"normalize"`: "whitespace,nfkc", true or false), prompt
text and chat message contents are normalized before tokenization (runtime/normalize.py),
so prompts that differ only in form share the prefix cache.

Standard library only (asyncio streams, one request per connection: `Connection: close`).
Chat prompts use the bundle's `chat_template` (tokenizer_config.json, rendered with jinja2
when it is installed) or, without one, the GLM-4 layout
`<|system|>\\n...<|user|>\\n...<|assistant|>\\n`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from iree_glm.errors import RequestError, UserError

MAX_BODY = 8 << 20
COMPLETION_DEFAULT_MAX_TOKENS = 16  # as OpenAI's /v1/completions
CHAT_DEFAULT_MAX_TOKENS = 256
FINISH = {"eos": "stop", "stop": "stop", "max_new_tokens": "length", "context_full": "length", "cancelled": "cancelled"}


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _chat_template(bundle: Path):
    """The bundle's jinja chat template as a callable(messages) -> str, or None."""
    path = bundle / "tokenizer_config.json"
    if not path.is_file():
        return None
    try:
        template = json.loads(path.read_text()).get("chat_template")
    except (OSError, ValueError):
        return None
    if not isinstance(template, str):
        return None
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise UserError(f"{path}: has a chat_template; rendering it needs jinja2 (pip install jinja2)") from None

    def fail(message):
        raise HttpError(400, f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = fail
    compiled = env.from_string(template)
    return lambda messages: compiled.render(messages=messages, add_generation_prompt=True)


def glm4_chat_prompt(messages: list[dict]) -> str:
    return "".join(f"<|{m['role']}|>\n{m['content']}" for m in messages) + "<|assistant|>\n"


class Server:
    def __init__(self, session, model_name: str, normalizer=None):
        self.session = session
        self.model_name = model_name
        self.normalizer = normalizer  # the launch default; a request's "normalize" overrides it
        self.render_chat = _chat_template(session.bundle) or glm4_chat_prompt
        self.requests_served = 0
        self.requests_cancelled = 0

    # -- HTTP -------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                method, path, body = await self._read_request(reader)
                await self._route(method, path, body, reader, writer)
            except HttpError as e:
                self._respond(writer, e.status, {"error": {"message": str(e), "type": "invalid_request_error"}})
            except RequestError as e:
                self._respond(writer, 400, {"error": {"message": str(e), "type": "invalid_request_error"}})
            except Exception as e:  # a bug or device error: answer 500 and keep serving
                print(f"iree_glm.serve: {type(e).__name__}: {e}", file=sys.stderr)
                self._respond(writer, 500, {"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error"}})
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _read_request(self, reader) -> tuple[str, str, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3:
            raise HttpError(400, "malformed request line")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise HttpError(400, "bad Content-Length") from None
        if length > MAX_BODY:
            raise HttpError(413, f"request body over {MAX_BODY} bytes")
        body = await reader.readexactly(length) if length else b""
        return parts[0], parts[1].split("?", 1)[0], body

    def _respond(self, writer, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
                  413: "Payload Too Large", 500: "Internal Server Error"}
        writer.write(
            f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
        )

    async def _route(self, method, path, body, reader, writer) -> None:
        if path in ("/health", "/v1/models"):
            if method != "GET":
                raise HttpError(405, f"{path} takes GET")
            if path == "/health":
                self._respond(writer, 200, {"status": "ok"})
            else:
                self._respond(writer, 200, {"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "iree_glm"}]})
            return
        if path not in ("/v1/completions", "/v1/chat/completions"):
            raise HttpError(404, f"no endpoint {path}")
        if method != "POST":
            raise HttpError(405, f"{path} takes POST")
        try:
            req = json.loads(body or b"null")
        except ValueError as e:
            raise HttpError(400, f"body is not valid JSON ({e})") from None
        if not isinstance(req, dict):
            raise HttpError(400, "body must be a JSON object")
        chat = path == "/v1/chat/completions"
        gen = self._start(req, chat)
        # Cancel the request as soon as the client goes away (EOF on its side of the socket).
        watch = asyncio.ensure_future(reader.read(1))
        watch.add_done_callback(lambda f: f.cancelled() or f.exception() is not None or f.result() or gen.cancel())
        try:
            if req.get("stream"):
                await self._stream(gen, chat, writer)
            else:
                await self._complete(gen, chat, writer)
        finally:
            watch.cancel()
            gen.cancel()
            if gen.result is not None and gen.result.stop_reason == "cancelled":
                self.requests_cancelled += 1
            self.requests_served += 1

    # -- OpenAI requests --------------------------------------------------------------------

    def _start(self, req: dict, chat: bool):
        from iree_glm.runtime import SamplingParams
        from iree_glm.runtime.normalize import parse_normalize

        normalize = self.normalizer
        if "normalize" in req:
            try:
                normalize = parse_normalize(req["normalize"], "'normalize'")
            except UserError as e:
                raise HttpError(400, str(e)) from None

        if chat:
            messages = req.get("messages")
            if not isinstance(messages, list) or not messages:
                raise HttpError(400, "'messages' must be a non-empty list")
            for m in messages:
                if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                    raise HttpError(400, "each message needs a string 'role' and 'content'")
            if normalize is not None:  # the contents only: the template's layout stays as it is
                messages = [{**m, "content": normalize(m["content"])} for m in messages]
            prompt: Any = self.render_chat(messages)
        else:
            prompt = req.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if isinstance(prompt, list):
                if not all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
                    raise HttpError(400, "'prompt' must be a string or a list of token ids")
            elif not isinstance(prompt, str):
                raise HttpError(400, "'prompt' must be a string or a list of token ids")
            if isinstance(prompt, str) and not prompt:
                raise HttpError(400, "the prompt is empty")
            if isinstance(prompt, str) and normalize is not None:
                prompt = normalize(prompt)
        max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
        if max_tokens is None:
            max_tokens = CHAT_DEFAULT_MAX_TOKENS if chat else COMPLETION_DEFAULT_MAX_TOKENS
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise HttpError(400, f"'max_tokens' must be a positive integer (got {max_tokens!r})")
        if req.get("n", 1) != 1:
            raise HttpError(400, "only n=1 is supported")
        stop = req.get("stop") or ()
        if isinstance(stop, str):
            stop = (stop,)
        if not (isinstance(stop, (list, tuple)) and all(isinstance(s, str) and s for s in stop)):
            raise HttpError(400, "'stop' must be a non-empty string or a list of them")
        sampling = SamplingParams(
            temperature=_number(req, "temperature", 1.0), top_p=_number(req, "top_p", 1.0),
            top_k=int(_number(req, "top_k", 0)), seed=req.get("seed") if isinstance(req.get("seed"), int) else None,
        )
        timeout = req.get("timeout")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise HttpError(400, "'timeout' must be a positive number of seconds")
        return self.session.stream_async(prompt, max_tokens, sampling, None, tuple(stop), timeout)

    def _envelope(self, chat: bool, rid: str, chunk: bool) -> dict:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if chat else "text_completion"
        return {"id": rid, "object": kind, "created": int(time.time()), "model": self.model_name}

    def _usage(self, r) -> dict:
        n, m = len(r.prompt_ids), len(r.generated_ids)
        return {"prompt_tokens": n, "completion_tokens": m, "total_tokens": n + m,
                "prompt_tokens_details": {"cached_tokens": r.cached_tokens}}

    async def _complete(self, gen, chat: bool, writer) -> None:
        try:
            r = await gen.collect()
        except TimeoutError:
            raise HttpError(408, "the request timed out") from None
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        choice: dict[str, Any] = {"index": 0, "finish_reason": FINISH[r.stop_reason]}
        if chat:
            choice["message"] = {"role": "assistant", "content": r.text}
        else:
            choice.update(text=r.text, logprobs=None)
        self._respond(writer, 200, {**self._envelope(chat, rid, False), "choices": [choice], "usage": self._usage(r)})

    async def _stream(self, gen, chat: bool, writer) -> None:
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n")

        async def send(choice: dict, **extra) -> None:
            payload = {**self._envelope(chat, rid, True), "choices": [{"index": 0, **choice}], **extra}
            writer.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            await writer.drain()

        if chat:
            await send({"delta": {"role": "assistant", "content": ""}, "finish_reason": None})
        try:
            async for event in gen:
                if event.text:
                    await send({"delta": {"content": event.text}, "finish_reason": None} if chat else {"text": event.text, "finish_reason": None})
        except TimeoutError:
            writer.write(b'data: {"error": {"message": "the request timed out", "type": "timeout"}}\n\n')
            return
        r = gen.result
        end = {"delta": {}} if chat else {"text": ""}
        await send({**end, "finish_reason": FINISH[r.stop_reason]}, usage=self._usage(r))
        writer.write(b"data: [DONE]\n\n")


def _number(req: dict, key: str, default: float) -> float:
    value = req.get(key, default)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise HttpError(400, f"'{key}' must be a number (got {value!r})")
    return float(value)


# -- running it -------------------------------------------------------------------------------


async def serve(server: Server, host: str, port: int, ready=None) -> None:
    srv = await asyncio.start_server(server.handle, host, port, limit=1 << 16)
    if ready is not None:
        ready(srv.sockets[0].getsockname()[1])
    async with srv:
        await srv.serve_forever()


class BackgroundServer:
    """The server on its own thread and event loop (for embedding and tests); `port` is bound."""

    def __init__(self, session, host: str = "127.0.0.1", port: int = 0, model_name: str | None = None, normalizer=None):
        self.server = Server(session, model_name or session.bundle.name, normalizer)
        self._loop = asyncio.new_event_loop()
        bound = threading.Event()
        self.port = 0

        def ready(p: int) -> None:
            self.port = p
            bound.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._task = self._loop.create_task(serve(self.server, host, port, ready))
            try:
                self._loop.run_until_complete(self._task)
            except (asyncio.CancelledError, Exception):
                pass
            finally:
                bound.set()

        self._thread = threading.Thread(target=run, name="iree_glm-serve", daemon=True)
        self._thread.start()
        bound.wait()
        if not self.port:
            raise UserError(f"cannot listen on {host}:{port}")

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join()

