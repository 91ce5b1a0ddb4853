"""A session's kept versions: list them, restore one (a new version: nothing is rewritten)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from titans_server import kept
from titans_server.auth import Tenant
from titans_server.errors import APIError
from titans_server.routes.sessions import checked, service_of
from titans_server.schemas import SessionRestore

router = APIRouter(prefix="/v1/sessions")


@router.get("/{session_id}/versions")
async def list_versions(session_id: str, request: Request, tenant: Tenant) -> dict:
    """The current version and the kept ones, newest first: what made each, and when."""
    service = service_of(request)
    found = await service.call_store(service.store.versions(tenant, checked(session_id)))
    if found is None:
        raise APIError(404, f"no session {session_id!r}", param="session_id", code="session_not_found")
    return {
        "object": "list",
        "session_id": session_id,
        "data": [version.public(current=i == 0) for i, version in enumerate(found)],
    }


@router.post("/{session_id}/restore")
async def restore(session_id: str, body: SessionRestore, request: Request, tenant: Tenant) -> dict:
    """Make a kept version's memory and transcript chain the newest version. Under the session's
    hold, so a restore and a chat apply in arrival order; ``if_version`` refuses a session that
    moved on."""
    service = service_of(request)
    async with service.session(tenant, checked(session_id), create=False) as opened:
        if body.if_version is not None and body.if_version != opened.expected:
            raise APIError(
                409,
                f"session {session_id!r} is at version {opened.expected}, not {body.if_version}",
                param="if_version",
                code="version_conflict",
            )
        meta = opened.meta
        if body.version == meta.version:
            state, chain = opened.state, (meta.chain_hash, meta.chain_length)
        else:
            entry, blob = await kept.kept_version(service, tenant, session_id, body.version)
            state = await asyncio.to_thread(kept.parse, service, blob)
            chain = entry.chain_hash, entry.chain_length
        meta = await service.commit(
            opened,
            state,
            made_by="restore",
            restored_from=body.version,
            chain_hash=chain[0],
            chain_length=chain[1],
        )
    return meta.public()
