"""The OpenAI-compatible routes (a Starlette app over one `Session`).

`POST /v1/chat/completions`, `/v1/completions` (both with `"stream": true` for server-sent
events), `/v1/embeddings`, `GET /v1/models`, `/health`. Requests go to the session's batching
engine, so concurrent clients share decode steps. Everything that may take long on the CPU
(JSON parsing, chat rendering, tokenization, compiling a grammar) runs on a worker thread, so
the event loop keeps serving other streams and /health. A client that goes away has its
request cancelled. Bad requests get a 4xx with a one-line JSON message naming the field.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

import numpy as np
from anyio import to_thread
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from iree_glm.errors import RequestError, UserError
from iree_glm.runtime.async_api import AsyncGeneration
from iree_glm.runtime.normalize import parse_normalize
from iree_glm.runtime.request import GenerationResult
from iree_glm.server import openai_schema as schema
from iree_glm.server.chat_format import ChatFormat, ReplyStream, read_reply, response_format_grammar
from iree_glm.server.openai_schema import BadRequest

log = logging.getLogger("iree_glm.serve")

MAX_BODY = 8 << 20
BODY_TIMEOUT_S = 30.0
FINISH = {"eos": "stop", "grammar": "stop", "stop": "stop", "max_new_tokens": "length", "context_full": "length"}


def finish_reason(r: GenerationResult, tool_call: bool) -> str:
    """OpenAI's finish_reason. A tool call is complete ("tool_calls") only where the model or its
    grammar ended it; a stop string that cuts it short is "stop", as a token limit is "length",
    so that a client does not run a call whose arguments were cut."""
    return "tool_calls" if tool_call and r.stop_reason in ("eos", "grammar") else FINISH[r.stop_reason]


def error(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status)


@dataclass
class Prepared:
    """A checked generation request, ready for the engine (built on a worker thread)."""

    chat: bool
    generations: list[AsyncGeneration]
    params: schema.GenerationParams
    tools_in_play: bool = False


class OpenAIServer:
    def __init__(self, session, model_name: str, normalizer=None, max_body: int = MAX_BODY, body_timeout: float = BODY_TIMEOUT_S):
        self.session = session
        self.model_name = model_name
        self.normalizer = normalizer  # the launch default; a request's "normalize" overrides it
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.chat_format = ChatFormat(session.bundle)
        self.requests_served = 0
        self.requests_cancelled = 0

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/health", self.health, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/admin/plans", self.plans, methods=["GET"]),
            Route("/admin/plan", self.switch_plan, methods=["POST"]),
        ], exception_handlers={404: self._not_found, 405: self._wrong_method})

    # -- plumbing ---------------------------------------------------------------------------

    async def _not_found(self, request: Request, exc) -> Response:
        path = request.url.path
        return error(404, f"no endpoint {path[:100]}{'...' if len(path) > 100 else ''}")

    async def _wrong_method(self, request: Request, exc) -> Response:
        return error(405, f"{request.url.path[:100]} does not take {request.method}")

    async def _body(self, request: Request) -> bytes:
        """The request body, at most `max_body` bytes, within `body_timeout` seconds."""
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise BadRequest(f"the request body is over {self.max_body} bytes", 413)
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.max_body:
                        raise BadRequest(f"the request body is over {self.max_body} bytes", 413)
                    chunks.append(chunk)
        except TimeoutError:
            raise BadRequest(f"the request body did not arrive within {self.body_timeout:g} s", 408) from None
        return b"".join(chunks)

    async def _handle(self, request: Request, prepare, respond) -> Response:
        """Read the body, `prepare` it on a worker thread, `respond`; errors as JSON."""
        try:
            body = await self._body(request)
            prepared = await to_thread.run_sync(prepare, body)
            return await respond(request, prepared)
        except BadRequest as e:
            return error(e.status, str(e), e.param)
        except RequestError as e:
            return error(400, str(e))
        except UserError as e:
            return error(400, str(e))
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception as e:  # a bug or a device error: 500 with one line, the traceback in the log
            log.exception("request failed")
            return error(500, f"{type(e).__name__}: {e}")

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": self.model_name, "object": "model", "created": 0, "owned_by": "iree_glm"}]})

    # -- plans (runtime/plans.py) ---------------------------------------------------------------

    async def plans(self, request: Request) -> Response:
        plans = self.session.plans
        return JSONResponse({"current": self.session.plan, "plans": plans.describe() if plans is not None else []})

    def prepare_switch(self, body: bytes) -> dict:
        """{"plan": NAME} or {"power_budget_w": WATTS} -> the switch done (between decode steps:
        running generations continue; the next prefill uses the plan)."""
        data = schema.parse_body(body)
        if len(set(data) & {"plan", "power_budget_w"}) != 1 or set(data) - {"plan", "power_budget_w"}:
            raise BadRequest("give exactly one of 'plan' (a name) or 'power_budget_w' (watts)")
        plans = self.session.plan_set()
        if "plan" in data:
            if not isinstance(data["plan"], str):
                raise BadRequest("'plan' must be a string", param="plan")
            return {"plan": plans.use(data["plan"])}
        name, note = plans.for_power_budget(data["power_budget_w"])
        if note:
            log.warning(note)
        return {"plan": plans.use(name), **({"warning": note} if note else {})}

    async def switch_plan(self, request: Request) -> Response:
        async def respond(request, done):
            return JSONResponse(done)
        return await self._handle(request, self.prepare_switch, respond)

    # -- preparing (worker thread) ------------------------------------------------------------

    def _normalizer(self, value):
        if value is None:
            return self.normalizer
        try:
            return parse_normalize(value, "'normalize'")
        except UserError as e:
            raise BadRequest(str(e), param="normalize") from None

    def _generations(self, prompt, params: schema.GenerationParams, grammar) -> list[AsyncGeneration]:
        return self.session.stream_async_many(
            prompt, params.n, params.max_tokens, params.sampling, None, params.stop, timeout=params.timeout,
            grammar=grammar, logprobs=params.logprobs,
        )

    def prepare_chat(self, body: bytes) -> Prepared:
        req = schema.chat_request(schema.parse_body(body), self.model_name)
        normalize = self._normalizer(req.params.normalize)
        prompt = self.chat_format.prompt(req, normalize)
        grammar = ChatFormat.grammar(req) if req.tool_choice != "none" else response_format_grammar(req.params.grammar)
        return Prepared(True, self._generations(prompt, req.params, grammar), req.params, req.tool_choice != "none")

    def prepare_completion(self, body: bytes) -> Prepared:
        req = schema.completion_request(schema.parse_body(body), self.model_name)
        prompt = req.prompt
        normalize = self._normalizer(req.params.normalize)
        if isinstance(prompt, str) and normalize is not None:
            prompt = normalize(prompt)
        prompt = list(prompt) if isinstance(prompt, tuple) else prompt
        return Prepared(False, self._generations(prompt, req.params, response_format_grammar(req.params.grammar)), req.params)

    # -- answering --------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        return await self._handle(request, self.prepare_chat, self._answer)

    async def completions(self, request: Request) -> Response:
        return await self._handle(request, self.prepare_completion, self._answer)

    async def _answer(self, request: Request, p: Prepared) -> Response:
        rid = ("chatcmpl-" if p.chat else "cmpl-") + uuid.uuid4().hex[:24]
        if p.params.stream:
            return StreamingResponse(self._events(request, p, rid), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        results = await self._collect(request, p.generations)
        if results is None:
            return Response(status_code=499)  # the client is gone; nothing will read this
        if any(r.stop_reason == "cancelled" for r in results):
            return error(503, "the server is shutting down")
        choices = [self._choice(p, i, r) for i, r in enumerate(results)]
        body = {**self._envelope(p.chat, rid, False), "choices": choices, "usage": self._usage(results)}
        return JSONResponse(body)

    async def _collect(self, request: Request, gens: list[AsyncGeneration]) -> list[GenerationResult] | None:
        """Run the generations to their end; None if the client disconnected first (they are
        cancelled then)."""
        work = asyncio.ensure_future(asyncio.gather(*(g.collect() for g in gens)))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                return work.result()  # raises TimeoutError (-> 408) or a device error
            work.cancel()
            self.requests_cancelled += 1
            return None
        except TimeoutError:
            raise BadRequest("the request timed out ('timeout')", 408) from None
        finally:
            gone.cancel()
            for g in gens:
                g.cancel()
            self.requests_served += 1

    def _envelope(self, chat: bool, rid: str, chunk: bool) -> dict:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if chat else "text_completion"
        return {"id": rid, "object": kind, "created": int(time.time()), "model": self.model_name}

    def _usage(self, results: list[GenerationResult]) -> dict:
        n = len(results[0].prompt_ids)
        m = sum(len(r.generated_ids) for r in results)
        usage = {"prompt_tokens": n, "completion_tokens": m, "total_tokens": n + m,
                 "prompt_tokens_details": {"cached_tokens": results[0].cached_tokens}}
        drafted = [r for r in results if r.draft_accepted is not None]
        if drafted:  # speculative decoding: OpenAI's prediction fields count the draft's tokens
            accepted, rejected = sum(r.draft_accepted for r in drafted), sum(r.draft_rejected for r in drafted)
            usage["completion_tokens_details"] = {"accepted_prediction_tokens": accepted, "rejected_prediction_tokens": rejected}
        counted = [r for r in results if r.target_calls is not None]  # with a draft, or checking forced tokens
        if counted:
            calls = sum(r.target_calls for r in counted)
            usage["speculative"] = {  # our extension (docs/speculative.md): decode tokens per call of the target
                "target_calls": calls, "tokens_per_target_call": sum(r.tokens_per_target_call * r.target_calls for r in counted) / calls if calls else 0.0}
            forced = [r.forced_tokens for r in counted if r.forced_tokens is not None]
            if forced:  # tokens the grammar forced, checked with the step before them
                usage["speculative"]["forced_tokens"] = sum(forced)
        return usage

    def _choice(self, p: Prepared, index: int, r: GenerationResult) -> dict:
        if not p.chat:
            return {"index": index, "text": r.text, "finish_reason": finish_reason(r, False),
                    "logprobs": self._completion_logprobs(r.logprobs) if r.logprobs is not None else None}
        reply = read_reply(r.text, p.tools_in_play)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_call is not None:
            c = reply.tool_call
            message["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}]
        choice = {"index": index, "message": message, "finish_reason": finish_reason(r, reply.tool_call is not None),
                  "logprobs": {"content": [self._chat_logprob(lp) for lp in r.logprobs]} if r.logprobs is not None else None}
        return choice

    # -- log-probabilities ------------------------------------------------------------------

    def _token(self, token: int) -> tuple[str, list[int]]:
        raw = self.session.constraints.vocabulary.token_bytes(token)
        return raw.decode("utf-8", errors="replace"), list(raw)

    def _chat_logprob(self, lp) -> dict:
        text, raw = self._token(lp.token)
        top = []
        for t, v in lp.top:
            ttext, traw = self._token(t)
            top.append({"token": ttext, "logprob": v, "bytes": traw})
        return {"token": text, "logprob": lp.logprob, "bytes": raw, "top_logprobs": top}

    def _completion_logprobs(self, lps) -> dict:
        tokens, offsets, offset = [], [], 0
        for lp in lps:
            text, _ = self._token(lp.token)
            tokens.append(text)
            offsets.append(offset)
            offset += len(text)
        tops = []
        for lp in lps:
            top: dict[str, float] = {}
            for t, v in lp.top:  # keyed by text (OpenAI's format): of tokens that share one, the likelier
                top.setdefault(self._token(t)[0], v)
            tops.append(top)
        return {"tokens": tokens, "token_logprobs": [lp.logprob for lp in lps], "top_logprobs": tops, "text_offset": offsets}

    # -- streaming --------------------------------------------------------------------------

    async def _events(self, request: Request, p: Prepared, rid: str) -> AsyncIterator[bytes]:
        """Server-sent events of n generations, interleaved as their tokens come."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(i: int, gen: AsyncGeneration) -> None:
            try:
                async for event in gen:
                    queue.put_nowait((i, event))
                queue.put_nowait((i, gen.result))
            except BaseException as e:  # noqa: BLE001 - handed to the stream, which reports it
                queue.put_nowait((i, e))

        tasks = [asyncio.ensure_future(pump(i, g)) for i, g in enumerate(p.generations)]
        replies = [ReplyStream(p.tools_in_play) if p.chat else None for _ in p.generations]
        offsets = [0] * len(p.generations)
        results: list[GenerationResult | None] = [None] * len(p.generations)

        def chunk(choices: list, **extra) -> bytes:
            return b"data: " + _dumps({**self._envelope(p.chat, rid, True), "choices": choices, **extra}) + b"\n\n"

        try:
            if p.chat:
                for i in range(len(p.generations)):
                    yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}])
            left = len(p.generations)
            while left:
                i, item = await queue.get()
                if isinstance(item, BaseException):
                    message = "the request timed out ('timeout')" if isinstance(item, TimeoutError) else f"{type(item).__name__}: {item}"
                    yield b"data: " + _dumps({"error": {"message": message, "type": "server_error"}}) + b"\n\n"
                    return
                if isinstance(item, GenerationResult):
                    if item.stop_reason == "cancelled":  # the engine was closed under us
                        return
                    results[i] = item
                    left -= 1
                    for c in self._final_deltas(p, i, replies[i], item):
                        yield chunk([c])
                    continue
                for c in self._deltas(p, i, replies[i], item, offsets):
                    yield chunk([c])
            if p.params.include_usage:
                yield chunk([], usage=self._usage(results))
            yield b"data: [DONE]\n\n"
        finally:
            for t in tasks:
                t.cancel()
            for g in p.generations:
                g.cancel()
            self.requests_served += 1
            if any(r is None for r in results):
                self.requests_cancelled += 1

    def _deltas(self, p: Prepared, i: int, reply: ReplyStream | None, event, offsets: list[int]) -> list[dict]:
        logprobs = None
        if event.logprob is not None:
            if p.chat:
                logprobs = {"content": [self._chat_logprob(event.logprob)]}
            else:
                lp = self._completion_logprobs([event.logprob])
                lp["text_offset"] = [offsets[i]]
                logprobs = lp
        if not p.chat:
            offsets[i] += len(event.text)
            if not event.text and logprobs is None:
                return []
            return [{"index": i, "text": event.text, "logprobs": logprobs, "finish_reason": None}]
        out = [self._delta(i, reply, kind, value) for kind, value in reply.push(event.text)]
        if logprobs is not None:
            if out:
                out[-1]["logprobs"] = logprobs
            else:
                out.append({"index": i, "delta": {}, "logprobs": logprobs, "finish_reason": None})
        return out

    @staticmethod
    def _delta(i: int, reply: ReplyStream, kind: str, value: str) -> dict:
        if kind == "content":
            delta: dict = {"content": value}
        elif kind == "name":
            c = reply.call
            delta = {"tool_calls": [{"index": 0, "id": c.id, "type": "function", "function": {"name": value, "arguments": ""}}]}
        else:
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": value}}]}
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": None}

    def _final_deltas(self, p: Prepared, i: int, reply: ReplyStream | None, r: GenerationResult) -> list[dict]:
        if not p.chat:
            return [{"index": i, "text": "", "logprobs": None, "finish_reason": finish_reason(r, False)}]
        out = [self._delta(i, reply, kind, value) for kind, value in reply.flush()]
        return out + [{"index": i, "delta": {}, "logprobs": None, "finish_reason": finish_reason(r, reply.mode == "call")}]

    # -- embeddings -------------------------------------------------------------------------

    async def embeddings(self, request: Request) -> Response:
        return await self._handle(request, self.prepare_embeddings, self._embed)

    def prepare_embeddings(self, body: bytes) -> tuple[schema.EmbeddingRequest, list[np.ndarray], int]:
        req = schema.embedding_request(schema.parse_body(body), self.model_name)
        vectors, tokens = [], 0
        for item in req.inputs:
            ids = self.session.encode(item) if isinstance(item, str) else list(item)
            vectors.append(self.session.embed(ids))
            tokens += len(ids)
        return req, vectors, tokens

    async def _embed(self, request: Request, prepared) -> Response:
        req, vectors, tokens = prepared
        data = []
        for i, v in enumerate(vectors):
            v = np.asarray(v, np.float32)
            value = base64.b64encode(v.tobytes()).decode() if req.base64 else v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": value})
        return JSONResponse({"object": "list", "data": data, "model": self.model_name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone away (after the body was read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()
