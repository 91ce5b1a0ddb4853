"""The pages the server shows a browser (/docs, /redoc, /playground) may load nothing from another host.

The docs' assets come from the fastapi-offline package, ReDoc's without the logo it fetched from a CDN
(see :mod:`titans_server.docs`); the playground's chart library is vendored in the package. A
Content-Security-Policy keeps the browser from fetching anything from elsewhere, now or after a later
Swagger UI or ReDoc reaches for it. The playground runs no inline script at all.
No other site may show the pages in a frame (``frame-ancestors 'none'``): a click there acts here.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"content-security-policy"
DOCS_PAGES = ("/docs", "/redoc")
DOCS_POLICY = b"default-src 'self' 'unsafe-inline' data: blob:; frame-ancestors 'none'"
PLAYGROUND = "/playground"
NO_FRAMES = (b"x-frame-options", b"DENY")  # for browsers without CSP's frame-ancestors
PLAYGROUND_POLICY = (
    b"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    b"frame-ancestors 'none'"
)


def policy_of(path: str) -> bytes | None:
    """The policy for a page at ``path``; None for the API."""
    if path in DOCS_PAGES:
        return DOCS_POLICY
    if path == PLAYGROUND or path.startswith(PLAYGROUND + "/"):
        return PLAYGROUND_POLICY
    return None


class PagesStayLocal:
    """ASGI middleware: the pages' responses carry their policy."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = policy_of(scope["path"]) if scope["type"] == "http" else None
        if policy is None:
            await self.app(scope, receive, send)
            return

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, policy), NO_FRAMES]
            await send(message)

        await self.app(scope, receive, with_policy)
