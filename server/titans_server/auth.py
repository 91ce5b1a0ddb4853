"""API keys: ``Authorization: Bearer KEY`` names a tenant; no keys configured, the server is open.

Only SHA-256 digests of keys are kept (the keys file holds ``TENANT SHA256HEX`` lines), and a
presented key is compared against every digest with :func:`hmac.compare_digest`, so neither the
answer nor its timing tells which key came close. The file is re-read when it changes, so keys
rotate without a restart: add the new key, move clients over, delete the old line.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from titans_server import refusals
from titans_server.errors import APIError

log = logging.getLogger("titans_server")

OPEN_TENANT = "default"  # the tenant of an open server and of the single TITANS_API_KEY
TENANT_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # use fullmatch


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def hash_key(key: str) -> str:
    """What a keys file holds for ``key``."""
    return digest(key).hex()


def new_key() -> str:
    """A fresh random key: 256 bits, URL-safe."""
    return "tsk-" + secrets.token_urlsafe(32)


def parse_keys(text: str, source: str = "keys file") -> list[tuple[str, bytes]]:
    """``(tenant, digest)`` pairs of a keys file; a bad line raises ValueError naming it."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if (
            len(parts) != 2
            or not TENANT_NAME.fullmatch(parts[0])
            or not re.fullmatch(r"[0-9a-f]{64}", parts[1])
        ):
            raise ValueError(
                f"{source} line {number}: expected 'TENANT SHA256HEX' (tenant: 1-64 letters, digits or ._-)"
            )
        keys.append((parts[0], bytes.fromhex(parts[1])))
    return keys


class Keyring:
    """The keys the server accepts; none configured means open."""

    def __init__(self, keys_file: Path | None, single_key: str | None):
        self.keys_file, self._single = keys_file, single_key
        self._stamp: tuple[int, ...] | None = None
        self._keys: list[tuple[str, bytes]] = []
        self._refresh(strict=True)

    @property
    def open(self) -> bool:
        return self.keys_file is None and self._single is None

    def tenant(self, key: str) -> str | None:
        """The tenant whose key this is (None: no such key), in time independent of which matched."""
        self._refresh(strict=False)
        presented, found = digest(key), None
        for tenant, known in self._keys:
            if hmac.compare_digest(known, presented):
                found = tenant
        return found

    def _refresh(self, strict: bool) -> None:
        """Re-read the keys file if it changed. A file that is gone revokes its keys; one that does
        not parse keeps the last good keys. Each is logged once."""
        keys = [] if self._single is None else [(OPEN_TENANT, digest(self._single))]
        if self.keys_file is None:
            self._keys = keys
            return
        try:
            status = self.keys_file.stat()
        except OSError as error:
            if strict:
                raise ValueError(f"cannot read the API keys: {error}") from error
            if self._stamp != ():
                log.error("the API keys file is gone, its keys no longer work: %s", error)
            self._keys, self._stamp = keys, ()
            return
        stamp = (status.st_ino, status.st_mtime_ns, status.st_ctime_ns, status.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            keys += parse_keys(self.keys_file.read_text(), str(self.keys_file))
        except (OSError, ValueError) as error:
            if strict:
                raise ValueError(f"cannot read the API keys: {error}") from error
            log.error("keeping the previous API keys: %s", error)
            return
        if len({known for _, known in keys}) < len(keys):
            message = f"{self.keys_file}: a key is listed twice"
            if strict:
                raise ValueError(message)
            log.error("keeping the previous API keys: %s", message)
            return
        self._keys = keys


bearer = HTTPBearer(auto_error=False, description="an API key (`titans keys add`)")
CHALLENGE = {"WWW-Authenticate": "Bearer"}


class Authenticate:
    """ASGI middleware: the API key of every ``/v1/`` request (and of ``/metrics`` with
    ``--metrics-auth``), checked from its headers before any of its body is read, so a caller
    without a key costs no parsing. The tenant goes to ``request.state.tenant``."""

    def __init__(self, app: ASGIApp, metrics_auth: bool):
        self.app, self.metrics_auth = app, metrics_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        guarded = path.startswith("/v1/") or (self.metrics_auth and path == "/metrics")
        if scope["type"] != "http" or not guarded:
            await self.app(scope, receive, send)
            return
        given = [value for name, value in scope["headers"] if name == b"authorization"]
        try:
            if len(given) > 1:  # which one would name the tenant? Neither.
                raise APIError(400, "send one Authorization header", code="duplicate_authorization")
            tenant = _tenant(scope["app"].state.keyring, given[0] if given else b"")
        except APIError as error:
            await refusals.send(error, scope, receive, send)
            return
        scope.setdefault("state", {})["tenant"] = tenant
        await self.app(scope, receive, send)


def _tenant(keyring: Keyring, authorization: bytes) -> str:
    """The tenant of an ``Authorization`` header's value; 401 without a valid key when keys are set."""
    if keyring.open:
        return OPEN_TENANT
    scheme, _, key = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        message = "send an API key: Authorization: Bearer KEY"
        raise APIError(401, message, code="missing_api_key", headers=CHALLENGE)
    tenant = keyring.tenant(key.strip())
    if tenant is None:
        raise APIError(401, "the API key is not valid", code="invalid_api_key", headers=CHALLENGE)
    return tenant


async def tenant_of(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    """The caller's tenant, as :class:`Authenticate` found it (``credentials`` puts the scheme in
    the OpenAPI schema)."""
    return request.state.tenant


Tenant = Annotated[str, Depends(tenant_of)]
