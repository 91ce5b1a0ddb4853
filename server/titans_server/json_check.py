"""JSON bodies are checked in the CPU pool before the server parses them.

The check counts a body's values without parsing it and refuses more than ``--max-json-values``
(130,000 tiny objects took 0.9 s to parse on the event loop, and the count of messages or
metadata keys could only be checked after), and refuses a body that is not text: invalid UTF-8,
or a lone surrogate (``"\\ud800"``) in any string or key, which the tokenizer and the JSON encoder
reject mid-request (a 500, and a session committed whose every read then failed). A body that
passes is parsed as usual, now in bounded time.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from titans_server import refusals
from titans_server.auth import OPEN_TENANT
from titans_server.cpu_jobs import check_json
from titans_server.cpu_pool import Abandoned, PoolBusy, disconnected
from titans_server.errors import APIError
from titans_server.limits import UPLOADS
from titans_server.settings import Settings


def is_json(path: str, content_type: bytes) -> bool:
    """Whether the body of a request to ``path`` is parsed as JSON: an upload (a document, a state)
    only if it says so, any other body also without a type (as FastAPI parses it)."""
    kind = content_type.split(b";")[0].strip().lower()
    if UPLOADS.match(path):
        return kind == b"application/json"
    return kind in (b"", b"application/json") or kind.endswith(b"+json")


class JsonCheck:
    """ASGI middleware: every ``/v1/`` JSON body checked (see the module docstring) before the app."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", []))
        if (
            scope["type"] != "http"
            or scope["method"] not in ("POST", "PUT", "PATCH")
            or not scope["path"].startswith("/v1/")
            or not is_json(scope["path"], headers.get(b"content-type", b""))
        ):
            await self.app(scope, receive, send)
            return
        try:
            body = await whole_body(receive)
        except APIError as error:  # over the body limit
            await refusals.send(error, scope, receive, send)
            return
        if body is None:  # the client left
            return
        if body:
            pool = scope["app"].state.cpu
            tenant = scope.get("state", {}).get("tenant", OPEN_TENANT)
            job = check_json(body, self.settings.max_json_values)
            try:
                verdict = await pool.run(tenant, job, disconnected(receive))
            except PoolBusy as error:
                busy = APIError(429, str(error), code="cpu_busy", headers={"Retry-After": "1"})
                await refusals.send(busy, scope, receive, send)
                return
            except Abandoned:
                return
            if verdict is not None:
                code, message, param = verdict
                await refusals.send(APIError(400, message, param=param, code=code), scope, receive, send)
                return
        await self.app(scope, replay(body, receive), send)


async def whole_body(receive: Receive) -> bytes | None:
    """The request's body (None: the client left before it was sent)."""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives ``body`` first, then whatever ``receive`` brings (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
