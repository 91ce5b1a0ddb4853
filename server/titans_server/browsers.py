"""What another site's page may make a browser send: nothing that changes state on a keyless server.

A keyless server on a laptop answers any page the laptop's browser opens: a simple cross-origin
POST (a form, ``text/plain``) reset, ingested into and forked sessions, and DNS rebinding
(``attacker.example`` resolving to 127.0.0.1) let a page read the answers too. So:

- a request whose ``Host`` is not in ``--allowed-hosts`` is refused (400 ``host_not_allowed``);
  unset, a loopback ``--host`` allows loopback names only, any other ``--host`` any name;
- on a server without API keys, a request other than GET, HEAD or OPTIONS that the browser marks as
  sent from another site (``Sec-Fetch-Site: cross-site`` or ``same-site``, or an ``Origin`` other
  than the request's own host) is refused (403 ``cross_site``), unless its origin is in
  ``--cors-origins``. curl and the SDKs send neither header, and are served as before.

A keyed server needs no such check: a browser never adds the ``Authorization`` header on its own.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from titans_server import refusals
from titans_server.errors import APIError
from titans_server.settings import Settings

LOOPBACK_BINDS = ("127.0.0.1", "localhost", "::1")
LOOPBACK_NAMES = ["localhost", "127.0.0.1", "[::1]"]
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def allowed_hosts(settings: Settings) -> list[str]:
    """The ``Host`` names served (``*``: any), as configured or by the bind's default."""
    if settings.allowed_hosts is not None:
        return [name.lower() for name in settings.allowed_hosts]
    return LOOPBACK_NAMES if settings.host in LOOPBACK_BINDS else ["*"]


def host_name(host: str) -> str:
    """``host`` without its port: ``[::1]:8000`` -> ``[::1]``, ``Example.com:80`` -> ``example.com``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def cross_site(headers: dict[bytes, bytes], host: str, trusted: set[str]) -> bool:
    """Whether a browser sent this request from a page of another site (and not a trusted origin)."""
    origin = headers.get(b"origin", b"").decode("latin-1")
    if origin in trusted:
        return False
    fetch_site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
    if fetch_site in ("cross-site", "same-site"):
        return True
    if not origin:
        return False  # not a browser's cross-origin request (curl, an SDK, a same-origin GET)
    return origin == "null" or urlsplit(origin).netloc.lower() != host.strip().lower()


class SameSite:
    """ASGI middleware: the checks of the module docstring, before anything else runs."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app, self.hosts = app, allowed_hosts(settings)
        self.trusted = set(settings.cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if "*" not in self.hosts and host_name(host) not in self.hosts:
            message = f"this server does not answer to the host {host!r} (--allowed-hosts)"
            await refusals.send(APIError(400, message, code="host_not_allowed"), scope, receive, send)
            return
        keyless = scope["app"].state.keyring.open if hasattr(scope["app"].state, "keyring") else True
        if scope["method"] not in SAFE_METHODS and keyless and cross_site(headers, host, self.trusted):
            message = "a server without API keys refuses requests from other sites' pages (--cors-origins)"
            await refusals.send(APIError(403, message, code="cross_site"), scope, receive, send)
            return
        await self.app(scope, receive, send)
