"""Sessions: create, list, inspect, delete, fork, reset, export and import the state, ingest documents."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from titans_core.state import to_bytes
from titans_server import kept
from titans_server.auth import Tenant
from titans_server.bins import Bins
from titans_server.cpu_pool import disconnected
from titans_server.engine import Fed
from titans_server.errors import APIError, log
from titans_server.routes.openai import STREAMS, abandon
from titans_server.schemas import SESSION_ID, IngestText, SessionCreate, SessionFork, is_session_id
from titans_server.service import Service, new_session_id

router = APIRouter(prefix="/v1/sessions")


def service_of(request: Request) -> Service:
    return request.app.state.service


def checked(session_id: str) -> str:
    if not is_session_id(session_id):
        raise APIError(
            400,
            "a session id is 1-128 letters, digits or ._:- (starting with a letter or digit)",
            param="session_id",
            code="invalid_value",
        )
    return session_id


@router.post("", status_code=201)
async def create_session(body: SessionCreate, request: Request, tenant: Tenant) -> JSONResponse:
    service = service_of(request)
    service.check_metadata(body.metadata)
    session_id = body.id or new_session_id()
    async with service.session(tenant, session_id, create=True, load_state=False) as opened:
        if opened.expected != -1:
            raise APIError(409, f"session {session_id!r} already exists", param="id", code="session_exists")
        opened.meta.metadata, opened.meta.ttl_seconds = body.metadata, body.ttl_seconds or 0
        if body.history_versions is not None:
            opened.meta.history_versions = body.history_versions
        meta = await service.commit(opened, None, counts=False, made_by="create")
    return JSONResponse(meta.public(), status_code=201)


@router.get("")
async def list_sessions(
    request: Request,
    tenant: Tenant,
    limit: int = Query(20, ge=1),
    after: str | None = Query(None, pattern=SESSION_ID),
) -> dict:
    service = service_of(request)
    limit = min(limit, service.settings.session_list_limit)
    try:
        found, more, cursor = await service.call_store(service.store.list(tenant, after, limit))
    except KeyError as error:
        raise APIError(400, f"unknown cursor {after!r}: pass a last_id from a page", param="after") from error
    return {"object": "list", "data": [meta.public() for meta in found], "has_more": more, "last_id": cursor}


@router.get("/{session_id}")
async def get_session(session_id: str, request: Request, tenant: Tenant) -> dict:
    service = service_of(request)
    meta = await service.call_store(service.store.get(tenant, checked(session_id)))
    if meta is None:
        raise APIError(404, f"no session {session_id!r}", param="session_id", code="session_not_found")
    return meta.public()


@router.delete("/{session_id}")
async def delete_session(session_id: str, request: Request, tenant: Tenant) -> dict:
    service = service_of(request)
    async with service.session(tenant, checked(session_id), create=False, load_state=False):
        await service.call_store(service.store.delete(tenant, session_id))
    return {"id": session_id, "object": "session.deleted", "deleted": True}


@router.post("/{session_id}/fork", status_code=201)
async def fork_session(
    session_id: str, request: Request, tenant: Tenant, body: SessionFork | None = None
) -> JSONResponse:
    service = service_of(request)
    target = (body.id if body else None) or new_session_id()
    if target == session_id:
        raise APIError(409, "a fork needs an id of its own", param="id", code="session_exists")
    # Both sessions are held, always in id order: two opposite forks must not deadlock.
    async with AsyncExitStack() as held:
        opened = {}
        for name in sorted([checked(session_id), target]):
            source_side = name == session_id
            opened[name] = await held.enter_async_context(
                service.session(tenant, name, create=not source_side, load_state=source_side)
            )
        source, copy = opened[session_id], opened[target]
        if copy.expected != -1:
            raise APIError(409, f"session {target!r} already exists", param="id", code="session_exists")
        service.check_metadata(source.meta.metadata)  # one stored before the limit: not copied
        copy.meta.metadata = dict(source.meta.metadata)
        copy.meta.ttl_seconds = source.meta.ttl_seconds
        copy.meta.chain_hash, copy.meta.chain_length = source.meta.chain_hash, source.meta.chain_length
        copy.meta.history_versions = source.meta.history_versions  # its own history, from the fork on
        meta = await service.commit(copy, source.state, counts=False, made_by="fork")
    return JSONResponse(meta.public(), status_code=201)


@router.post("/{session_id}/reset")
async def reset_session(session_id: str, request: Request, tenant: Tenant) -> dict:
    service = service_of(request)
    async with service.session(tenant, checked(session_id), create=False, load_state=False) as opened:
        meta = await service.commit(opened, None, chain_hash="", chain_length=0, made_by="reset")
    return meta.public()


@router.get(
    "/{session_id}/state",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def export_state(
    session_id: str,
    request: Request,
    tenant: Tenant,
    version: int | None = Query(None, ge=0, description="a kept version (unset: the current one)"),
) -> Response:
    service = service_of(request)
    if version is not None:  # a kept version never changes: nothing to hold
        state = await kept.state_at(service, tenant, checked(session_id), version)
        data = to_bytes(state, {"session_id": session_id, "session_version": str(version)})
        headers = {"X-Session-Version": str(version)}
        headers["Content-Disposition"] = f'attachment; filename="{session_id}-v{version}.safetensors"'
        return Response(data, media_type="application/octet-stream", headers=headers)
    async with service.session(tenant, checked(session_id), create=False) as opened:
        state = opened.state or service.model.initial_state(1)
        meta = opened.meta
        data = to_bytes(state, {"session_id": meta.id, "session_version": str(meta.version)})
    headers = {
        "X-Session-Version": str(meta.version),
        "Content-Disposition": f'attachment; filename="{meta.id}.safetensors"',
    }
    return Response(data, media_type="application/octet-stream", headers=headers)


@router.get("/{session_id}/memory")
async def inspect_memory(
    session_id: str,
    request: Request,
    tenant: Tenant,
    against: int | None = Query(None, ge=0, description="a kept version to compare the memory with"),
    version: int | None = Query(
        None, ge=0, description="with against: the version compared (unset: the current one)"
    ),
) -> dict:
    """How far the session's memory has moved: per layer, its norm and its distance from the
    model's initial memory (what a reset returns to); with ``against``, also how far it moved
    from that version to ``version`` (per layer, the relative norm of the difference)."""
    service = service_of(request)
    meta, state = await service.snapshot(tenant, checked(session_id))  # never waits on a request at work
    layers = await asyncio.to_thread(service.memory_layers, state)
    session = meta.public()
    fields = ("tokens_seen", "version", "state_bytes", "created_at", "updated_at")
    report = {
        "object": "session.memory",
        "session_id": meta.id,
        **{f: session[f] for f in fields},
        "layers": layers,
    }
    if against is not None:
        earlier = await kept.state_at(service, tenant, session_id, against, current=(meta, state))
        later = state
        if version is not None:
            later = await kept.state_at(service, tenant, session_id, version, current=(meta, state))
        report["against"], report["compared"] = against, meta.version if version is None else version
        report["changes"] = await asyncio.to_thread(kept.memory_change, service, later, earlier)
    return report


@router.put("/{session_id}/state")
async def import_state(session_id: str, request: Request, tenant: Tenant) -> dict:
    service = service_of(request)
    state = await asyncio.to_thread(service.parse_state, await request.body())  # up to 64 MB: off the loop
    if state.batch_size != 1:
        raise APIError(
            400, f"a session state has a batch of 1, this one {state.batch_size}", code="invalid_state"
        )
    async with service.session(tenant, checked(session_id), create=True, load_state=False) as opened:
        meta = await service.commit(opened, state, chain_hash="", chain_length=0, made_by="import")
    return meta.public()


@router.post("/{session_id}/ingest", responses=STREAMS)
async def ingest(
    session_id: str,
    request: Request,
    tenant: Tenant,
    stream: bool = False,
    bin_tokens: int = Query(64, ge=1, le=65536, description="tokens per bin of the progress events' series"),
):
    service = service_of(request)
    checked(session_id)  # before the body is read (and the key before that: a dependency)
    text = await document_of(request)
    limit = service.settings.max_ingest_tokens
    # In the CPU pool, in the tenant's turn; dropped at the limit or when the client leaves.
    encoded = await service.tokens(tenant, [text], limit, disconnected(request.receive))
    if encoded is None:
        raise APIError(
            413, f"the document has more than {limit} tokens (--max-ingest-tokens)", code="request_too_large"
        )
    del text  # the tokens are what is kept
    (tokens,) = encoded
    if not tokens:
        raise APIError(400, "the document is empty", code="empty_document")
    bins = Bins(bin_tokens, len(tokens))

    async def work(on_fed: Callable[[Fed], None]) -> dict:
        async with service.session(tenant, session_id, create=True) as opened:
            begin = time.perf_counter()
            job = await service.ingest(opened, tokens, on_fed)
            seconds = time.perf_counter() - begin
            meta = await service.commit(opened, job.state, made_by="ingest")
        return {
            "session_id": meta.id,
            "tokens_ingested": len(tokens),
            "version": meta.version,
            "seconds": seconds,
            "tokens_per_second": len(tokens) / seconds if seconds > 0 else None,
            **bins.means(),
        }

    if not stream:
        return await work(bins.add)

    async def events():
        progress: asyncio.Queue[dict | None] = asyncio.Queue()
        begin = time.perf_counter()

        def on_fed(fed: Fed) -> None:  # folded as it comes: the done event's means cover every piece
            elapsed = time.perf_counter() - begin
            body = {
                "tokens_done": fed.tokens_done,
                "tokens_total": len(tokens),
                "tokens_per_second": fed.tokens_done / elapsed,
                "bin_tokens": bin_tokens,
                **bins.add(fed),
            }
            progress.put_nowait(body)

        task = asyncio.ensure_future(work(on_fed))
        task.add_done_callback(lambda _: progress.put_nowait(None))
        try:
            while (body := await progress.get()) is not None:
                yield {"event": "progress", "data": json.dumps(body)}
            try:
                yield {"event": "done", "data": json.dumps(task.result())}
            except APIError as error:
                yield {"event": "error", "data": json.dumps(error.body())}
            except Exception as error:
                log.exception("ingestion failed", exc_info=error)
                yield {"event": "error", "data": json.dumps(APIError(500, "internal error").body())}
        finally:
            abandon(task)

    return EventSourceResponse(events(), ping=15)


async def document_of(request: Request) -> str:
    """The document of an ingest request: text/plain, JSON ``{"text": ...}``, or a multipart file."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            return IngestText.model_validate_json(await request.body()).text
        except ValueError as error:
            raise APIError(400, f'the JSON body must be {{"text": "..."}}: {error}', param="text") from error
    if kind == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise APIError(400, "the multipart body must have a file field named 'file'", param="file")
        data = await upload.read()
    elif kind in ("text/plain", ""):
        data = await request.body()
    else:
        raise APIError(400, f"send text/plain, application/json or multipart/form-data, not {kind}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise APIError(400, f"the document is not UTF-8 text: {error}", code="invalid_text") from error
