"""X-Request-Id: echoed on every response and remembered with the version a request committed.

A client that tags its calls can then find, in a session's kept versions, the one each call made.
"""

from __future__ import annotations

import re
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
# Visible ASCII, bounded: it is stored with each kept version and echoed in a header.
_VALID = re.compile(r"[!-~]{1,128}")

current: ContextVar[str] = ContextVar("request_id", default="")


def valid(value: str) -> bool:
    return _VALID.fullmatch(value) is not None


class RequestId:
    """Pure ASGI (no buffering, streams pass through): takes a valid X-Request-Id into
    :data:`current` for the request's commits, and echoes it on the response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = next((v for k, v in scope["headers"] if k == HEADER.encode()), b"").decode("latin-1")
        if not valid(given):
            return await self.app(scope, receive, send)
        token = current.set(given)

        async def echo(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != HEADER.encode()]
                message["headers"] = [*headers, (HEADER.encode(), given.encode())]
            await send(message)

        try:
            await self.app(scope, receive, echo)
        finally:
            current.reset(token)
