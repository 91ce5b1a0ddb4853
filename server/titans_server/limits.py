"""Request body limits: a body over its limit is 413 before it is read whole.

Uploads (ingest, state import) get ``max_ingest_bytes``, everything else ``max_request_bytes``. A
declared Content-Length is checked up front; a chunked body is counted as it arrives.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from titans_server.errors import APIError
from titans_server.settings import Settings

UPLOADS = re.compile(r"^/v1/sessions/[^/]+/(ingest|state)$")


class BodyLimit:
    """ASGI middleware: 413 in OpenAI's shape for a body over its limit (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = UPLOADS.match(scope["path"]) is not None
        limit = self.settings.max_ingest_bytes if upload else self.settings.max_request_bytes
        message = f"the request body is larger than {limit:,} bytes" + (
            " (--max-ingest-bytes)" if upload else " (--max-request-bytes)"
        )
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await APIError(413, message, code="request_too_large").response()(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            received = await receive()
            if received["type"] == "http.request":
                seen += len(received.get("body", b""))
                if seen > limit:  # FastAPI re-raises HTTP errors from body parsing; the handler shapes it
                    raise APIError(413, message, code="request_too_large")
            return received

        await self.app(scope, counted, send)
