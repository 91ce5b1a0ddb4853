"""The API docs pages (/docs, /redoc) may load nothing from another host.

Their assets come from the fastapi-offline package (see :func:`titans_server.app.create_app`), but
ReDoc's sidebar still shows Redocly's logo from a CDN: a Content-Security-Policy keeps the browser
from fetching it, or anything a later Swagger UI or ReDoc reaches for.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_PAGES = ("/docs", "/redoc")
POLICY = (b"content-security-policy", b"default-src 'self' 'unsafe-inline' data: blob:")


class DocsStayLocal:
    """ASGI middleware: the docs pages' responses carry :data:`POLICY`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in DOCS_PAGES:
            await self.app(scope, receive, send)
            return

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), POLICY]
            await send(message)

        await self.app(scope, receive, with_policy)
