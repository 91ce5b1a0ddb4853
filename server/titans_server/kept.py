"""A session's kept versions as states: for export, restore and comparing the memory over time."""

from __future__ import annotations

import math

import torch

from titans_core import ModelState
from titans_server.errors import APIError
from titans_server.history import Version
from titans_server.service import Service
from titans_server.store import SessionMeta


async def kept_version(service: Service, tenant: str, session_id: str, version: int) -> tuple[Version, bytes]:
    """A kept version and its state bytes (empty: the initial memory); 404 if it is not kept."""
    found = await service.call_store(service.store.kept(tenant, session_id, version))
    if found is None:
        raise APIError(
            404,
            f"session {session_id!r} keeps no version {version} (GET /v1/sessions/{session_id}/versions "
            "lists those it keeps)",
            param="version",
            code="version_not_found",
        )
    return found


def parse(service: Service, blob: bytes) -> ModelState | None:
    """Kept bytes as a state (None: the initial memory), checked like an import."""
    return service.parse_state(blob) if blob else None


async def state_at(
    service: Service,
    tenant: str,
    session_id: str,
    version: int,
    current: tuple[SessionMeta, ModelState | None] | None = None,
) -> ModelState:
    """The memory at ``version``: a kept one, or the current one (``current``: as already read)."""
    found = await service.call_store(service.store.kept(tenant, session_id, version))
    if found is not None:
        return parse(service, found[1]) or service.model.initial_state(1)
    meta, state = current or await service.snapshot(tenant, session_id)  # 404 if there is no session
    if meta.version != version:
        await kept_version(service, tenant, session_id, version)  # its 404
    return state or service.model.initial_state(1)


def memory_change(service: Service, now: ModelState | None, before: ModelState) -> list[dict]:
    """Per layer, how far the memory moved from ``before`` to ``now``: the norm of the difference of
    every memory weight (as of each state's last token), relative to ``before``'s norm."""
    now = now or service.model.initial_state(1)
    changes = []
    with torch.no_grad():
        for index, (a, b) in enumerate(zip(now.layers, before.layers)):
            pairs = list(zip(a.memory.current_weights(), b.memory.current_weights()))
            moved = math.sqrt(sum(float((x - y.to(x.device)).square().sum()) for x, y in pairs))
            base = math.sqrt(sum(float(y.square().sum()) for _, y in pairs))
            changes.append(
                {"layer": index, "distance": moved, "relative_change": moved / base if base else None}
            )
    return changes
