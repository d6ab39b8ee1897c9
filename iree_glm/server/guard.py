"""Who may call the server: an ASGI middleware in front of the routes.

- An API key (`--api-key` / IREE_GLM_API_KEY): requests without `Authorization: Bearer KEY`
  get 401 (/health stays open for load balancers and probes).
- Browsers: a request carrying an `Origin` header comes from a web page; unless that origin
  was allowed (`--allow-origin`), it gets 403, so a page the user visits cannot drive a model
  on their machine. Allowed origins get CORS headers and preflight answers.
- POST bodies must be `application/json`: a cross-origin "simple" request (text/plain, form
  data) that a browser sends without a preflight is refused with 415 before anything runs.
"""

from __future__ import annotations

import hmac
import json

OPEN_PATHS = ("/health",)


async def _send_json(send, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": status}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    def __init__(self, app, api_key: str | None = None, allow_origins: tuple[str, ...] = ()):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.allow_origins = tuple(allow_origins)

    def _origin_allowed(self, origin: str) -> bool:
        return "*" in self.allow_origins or origin in self.allow_origins

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        cors: list = []
        if origin is not None:
            if not self._origin_allowed(origin):
                return await _send_json(send, 403, f"requests from the web origin {origin!r} are refused "
                                                   "(start the server with --allow-origin to allow one)")
            cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
            if scope["method"] == "OPTIONS":  # a preflight
                await send({"type": "http.response.start", "status": 204, "headers": [
                    *cors, (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                    (b"access-control-allow-headers", b"authorization, content-type"),
                    (b"access-control-max-age", b"600")]})
                return await send({"type": "http.response.body", "body": b""})
        if self.api_key is not None and scope["path"] not in OPEN_PATHS:
            auth = headers.get("authorization", "")
            given = auth[len("bearer "):].strip().encode("latin-1") if auth.lower().startswith("bearer ") else b""
            if not hmac.compare_digest(given, self.api_key):
                return await _send_json(send, 401, "missing or wrong API key (send Authorization: Bearer KEY)",
                                        [*cors, (b"www-authenticate", b"Bearer")])
        if scope["method"] == "POST":
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return await _send_json(send, 415, f"Content-Type must be application/json (got {kind or 'none'!r})", cors)

        if not cors:
            return await self.app(scope, receive, send)

        async def send_with_cors(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        return await self.app(scope, receive, send_with_cors)
