"""The request flows: a session's state is loaded, worked on by the engine, and committed, all or nothing.

A per-session lock (fair, so FIFO) covers load -> engine -> commit, so a session's requests apply
in arrival order; other sessions proceed in parallel and batch together in the engine.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import torch

from titans_core import ModelState, SamplingParams, StateMismatchError, TitansLM
from titans_core.generation_config import GenerationDefaults
from titans_core.state import MAX_POSITION, check_state, from_bytes, state_shapes, to_bytes
from titans_server import transcript
from titans_server.cpu_jobs import encode_texts
from titans_server.cpu_pool import Abandoned, CpuPool, PoolBusy
from titans_server.engine import Engine, EngineOverloaded, Fed, Job, NotFinite
from titans_server.errors import APIError
from titans_server.metrics import Metrics
from titans_server.settings import Settings
from titans_server.store import (
    LeaseBusy,
    SessionLimit,
    SessionMeta,
    SessionStore,
    StoreUnavailable,
    TenantBytesExceeded,
    VersionConflict,
)


def header_cap(config) -> int:
    """The largest safetensors header an imported state may have: four times a real state's at the
    longest position (every optional tensor, the widest numbers), plus 64 KiB of metadata. Parsing a
    hostile header beyond it would hold the GIL for seconds and take gigabytes."""
    shapes = state_shapes(config, MAX_POSITION - 1, 1)
    entry = {"dtype": "F32", "data_offsets": [2**63, 2**63]}
    header = {name: {**entry, "shape": list(shape)} for name, shape in shapes.items()}
    return 4 * len(json.dumps(header)) + (64 << 10)


def abandoned() -> bool:
    """Whether this task was asked to cancel, even if a library swallowed the CancelledError (redis-py's
    asyncio calls now and then finish normally after ``Task.cancel()``). Python 3.11+ counts the
    requests (``Task.cancelling``); on 3.10 only a CancelledError that reaches us tells."""
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return cancelling is not None and cancelling() > 0


@dataclass
class Opened:
    """A session as loaded for one request: what to continue and what to commit against."""

    tenant: str
    meta: SessionMeta
    state: ModelState | None
    expected: int  # the version to commit against (-1: create)
    persistent: bool  # False: a request without a session, thrown away afterwards


@dataclass
class Outcome:
    """What a chat or completion produced, for the response body and headers."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    session: SessionMeta | None


class Service:
    """The request flows the routes share: hold a session, run a job on the engine, commit."""

    def __init__(
        self,
        settings: Settings,
        model: TitansLM,
        model_id: str,
        store: SessionStore,
        engine: Engine,
        metrics: Metrics,
        cpu: CpuPool,
    ):
        self.settings, self.model, self.model_id = settings, model, model_id
        # What a request's ``model`` may name: the served id first (clients pick the first listed),
        # then "default", which the README's examples send whatever model a server runs.
        self.model_names = list(dict.fromkeys([model_id, "default"]))
        self.tokenizer = model.tokenizer
        self.store, self.engine, self.metrics, self.cpu = store, engine, metrics, cpu
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._queued: dict[str, int] = {}  # each tenant's jobs in the engine
        self.newline = model.tokenizer.encode("\n")
        self._reply_opening = model.tokenizer.generation_prompt()
        self.state_header_cap = header_cap(model.config)
        self.started = int(time.time())
        # the model's generation_config.json: sampling fields a request leaves out
        self.generation_defaults = GenerationDefaults.for_model(settings.model)

    def check_model(self, name: str | None) -> None:
        """A request for a model we do not serve is OpenAI's 404, not quietly another model's reply."""
        if name is not None and name not in self.model_names:
            served = ", ".join(self.model_names)
            raise APIError(
                404,
                f"model {name!r} is not served here; it serves {served}",
                param="model",
                code="model_not_found",
            )

    @asynccontextmanager
    async def session(
        self, tenant: str, session_id: str | None, *, create: bool, load_state: bool = True
    ) -> AsyncIterator[Opened]:
        """Hold the tenant's ``session_id`` for one request (None: a fresh, throwaway memory).

        Without ``load_state`` the stored state is not parsed (delete, reset, import): a session
        whose state no longer loads can still be cleaned up.
        """
        if session_id is None:
            yield Opened(tenant, SessionMeta(id="", model=self.model_id), None, -1, persistent=False)
            return
        key = f"{tenant}:{session_id}"
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        if users >= self.settings.max_waiting_per_session:
            raise APIError(
                429,
                f"{users} requests are waiting for session {session_id!r} (--max-waiting-per-session)",
                param="session_id",
                code="session_queue_full",
                headers={"Retry-After": "1"},
            )
        self._locks[key] = (lock, users + 1)
        try:
            with self.metrics.waiting.track_inprogress():
                await lock.acquire()
            try:
                async with self._lease(tenant, session_id):
                    yield await self._open(tenant, session_id, create, load_state)
            finally:
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    @asynccontextmanager
    async def _lease(self, tenant: str, session_id: str) -> AsyncIterator[None]:
        """The session's lease across servers sharing the store (see :meth:`SessionStore.lease`)."""
        try:
            async with self.store.lease(tenant, session_id):
                yield
        except LeaseBusy as error:
            raise APIError(409, str(error), code="session_busy", headers={"Retry-After": "1"}) from error
        except StoreUnavailable as error:
            raise APIError(503, str(error), code="store_unavailable", headers={"Retry-After": "1"}) from error

    async def _open(self, tenant: str, session_id: str, create: bool, load_state: bool) -> Opened:
        begin = time.perf_counter()
        try:
            if load_state:
                loaded = await self.call_store(self.store.load(tenant, session_id))
            else:
                meta = await self.call_store(self.store.get(tenant, session_id))
                loaded = None if meta is None else (meta, None)
        except VersionConflict as error:
            raise APIError(409, str(error), code="version_conflict") from error
        if loaded is None:
            if not create:
                raise APIError(
                    404, f"no session {session_id!r}", param="session_id", code="session_not_found"
                )
            limit = self.settings.max_sessions_per_tenant
            if await self.call_store(self.store.count(tenant)) >= limit:  # early: the commit decides
                raise APIError(
                    429, f"this API key holds {limit} sessions, the most it may", code="too_many_sessions"
                )
            return Opened(tenant, SessionMeta(id=session_id, model=self.model_id), None, -1, persistent=True)
        meta, blob = loaded
        state = self._state_of(session_id, meta, blob)
        self.metrics.state_load_seconds.observe(time.perf_counter() - begin)
        return Opened(tenant, meta, state, meta.version, persistent=True)

    async def snapshot(self, tenant: str, session_id: str) -> tuple[SessionMeta, ModelState | None]:
        """The session as stored now, without holding it: a read never waits behind (or delays) a
        request at work on the session. Read again if a commit landed between its two reads."""
        for _ in range(3):
            try:
                loaded = await self.call_store(self.store.load(tenant, session_id))
            except VersionConflict:
                continue
            if loaded is None:
                raise APIError(
                    404, f"no session {session_id!r}", param="session_id", code="session_not_found"
                )
            meta, blob = loaded
            now = await self.call_store(self.store.get(tenant, session_id))
            if now is not None and now.revision == meta.revision:
                return meta, self._state_of(session_id, meta, blob)
        raise APIError(
            409, f"session {session_id!r} kept changing while it was read; retry", code="version_conflict"
        )

    def _state_of(self, session_id: str, meta: SessionMeta, blob: bytes | None) -> ModelState | None:
        """The stored bytes as a state on the engine's device (None: the initial memory)."""
        if blob is None:
            return None
        try:
            state = from_bytes(blob, self.model.config)
        except StateMismatchError as error:
            raise APIError(
                409,
                f"session {session_id!r} holds the memory of another model ({meta.model}); "
                "reset or delete it to use it with this one",
                code="model_mismatch",
            ) from error
        except ValueError as error:
            raise APIError(
                500,
                f"session {session_id!r} has an unreadable stored state: {error}",
                code="state_corrupt",
            ) from error
        return state.map(lambda t: t.to(self.engine.device))

    async def commit(
        self, opened: Opened, state: ModelState | None, *, counts: bool = True, **changes
    ) -> SessionMeta:
        """Store ``state`` as the session's next version (``changes`` update its metadata).

        A committed request (``counts``) adds one to the version; creating a session alone (an
        empty one, or a fork) starts it at 0.
        """
        meta = opened.meta
        if not opened.persistent:
            return meta
        begin = time.perf_counter()
        for name, value in changes.items():
            setattr(meta, name, value)
        if state is not None:
            try:  # never store what would not load again: the session would be stuck
                check_state(state)
            except ValueError as error:
                raise APIError(
                    422,
                    f"session {meta.id!r}: {error}; nothing was committed",
                    param="session_id",
                    code="state_out_of_range",
                ) from error
        meta.version = max(opened.expected, 0) + counts
        meta.tokens_seen = 0 if state is None else state.position
        blob = None if state is None else to_bytes(state)
        if abandoned():  # the client left (or a shutdown cut in): whatever swallowed it, commit nothing
            raise asyncio.CancelledError
        # Shielded: a client that leaves mid-commit must not cut it between its Redis calls, and
        # the session is held until it has landed.
        limit = self.settings.max_sessions_per_tenant
        landing = asyncio.ensure_future(self.store.commit(opened.tenant, meta, opened.expected, blob, limit))
        try:
            committed = await asyncio.shield(landing)
        except asyncio.CancelledError:
            await asyncio.wait([landing])
            raise
        except VersionConflict as error:
            raise APIError(409, str(error), code="version_conflict") from error
        except SessionLimit as error:
            raise APIError(429, str(error), code="too_many_sessions") from error
        except TenantBytesExceeded as error:
            raise APIError(429, str(error), code="tenant_bytes_exceeded") from error
        except StoreUnavailable as error:  # the write may or may not have landed: not safe to resend
            raise APIError(503, str(error), code="commit_uncertain", headers={"Retry-After": "1"}) from error
        self.metrics.state_save_seconds.observe(time.perf_counter() - begin)
        return committed

    async def call_store(self, awaitable):
        """Await a store call; an unreachable store is 503 with Retry-After."""
        try:
            return await awaitable
        except StoreUnavailable as error:
            raise APIError(503, str(error), code="store_unavailable", headers={"Retry-After": "1"}) from error

    def sampling(self, request, stop_ids: list[int]) -> SamplingParams:
        """The request's sampling fields; those it left out come from the model's generation config."""
        cap, defaults = self.settings.max_new_tokens, self.generation_defaults
        limit = request.max_completion_tokens or request.max_tokens
        limit = limit or min(defaults.max_new_tokens or cap, cap)
        given = {name: getattr(request, name) for name in ("temperature", "top_p", "top_k")}
        chosen = defaults.apply({k: v for k, v in given.items() if k in request.model_fields_set})
        if limit > self.settings.max_new_tokens:
            raise APIError(
                400,
                f"max_tokens is at most {self.settings.max_new_tokens}",
                param="max_tokens",
                code="too_many",
            )
        return SamplingParams(
            max_new_tokens=limit,
            temperature=chosen.get("temperature", given["temperature"]),
            top_p=chosen.get("top_p", given["top_p"]),
            top_k=chosen.get("top_k", given["top_k"]),
            seed=request.seed,
            stop_token_ids=tuple(stop_ids),
        )

    def check_messages(self, messages: list) -> None:
        """400 ``too_many_messages`` past --max-messages (each costs tokens of its own to encode)."""
        if len(messages) > self.settings.max_messages:
            raise APIError(
                400,
                f"{len(messages)} messages, more than {self.settings.max_messages} (--max-messages)",
                param="messages",
                code="too_many_messages",
            )

    def check_metadata(self, metadata: dict[str, str]) -> None:
        """400 ``metadata_too_large`` past --max-metadata-keys or --max-metadata-bytes."""
        keys, limit = len(metadata), self.settings.max_metadata_keys
        size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
        if keys > limit or size > self.settings.max_metadata_bytes:
            raise APIError(
                400,
                f"metadata has {keys} keys and {size:,} bytes; at most {limit} keys and "
                f"{self.settings.max_metadata_bytes:,} bytes (--max-metadata-keys, --max-metadata-bytes)",
                param="metadata",
                code="metadata_too_large",
            )

    async def tokens(self, tenant: str, texts: list[str], limit: int, gone=None) -> list[list[int]] | None:
        """Each text's tokens, encoded in the CPU pool in the tenant's turn; None past ``limit`` in
        all (the rest is never encoded). ``gone``: the client's disconnection, which drops the work."""
        try:
            encoded = await self.cpu.run(tenant, encode_texts(texts, limit), gone)
        except PoolBusy as error:
            raise APIError(429, str(error), code="cpu_busy", headers={"Retry-After": "1"}) from error
        except Abandoned as error:
            raise APIError(400, "the client left", code="client_disconnected") from error
        return None if encoded is None else [ids.tolist() for ids in encoded]

    def check_prompt_bytes(self, texts: list[str]) -> None:
        """400 ``prompt_too_long`` past --max-prompt-bytes: checked before any of it is encoded (a
        token may take 29 bytes of whitespace)."""
        size, limit = sum(len(text.encode()) for text in texts), self.settings.max_prompt_bytes
        if size > limit:
            raise APIError(
                400,
                f"the request adds {size:,} bytes of text, more than {limit:,} (--max-prompt-bytes)",
                code="prompt_too_long",
            )

    async def encode_prompt(self, tenant: str, texts: list[str]) -> list[list[int]]:
        """The tokens of ``texts`` a request adds, within --max-prompt-bytes and --max-prompt-tokens."""
        self.check_prompt_bytes(texts)
        limit = self.settings.max_prompt_tokens
        encoded = await self.tokens(tenant, texts, limit)
        if encoded is None:
            raise APIError(400, f"the request adds more than {limit} tokens", code="prompt_too_long")
        return encoded

    async def encode_chat(self, tenant: str, messages: list[dict[str, str]]) -> list[int]:
        """``tokenizer.encode_chat(messages)``, encoded in the CPU pool (see :meth:`encode_prompt`)."""
        contents = await self.encode_prompt(tenant, ["\n" + m["content"] for m in messages])
        ids: list[int] = []
        for message, content in zip(messages, contents):
            role = self.tokenizer.special_ids[f"<|{message['role']}|>"]
            ids += [role, *content, self.tokenizer.end_of_turn_id, *self.newline]
        return ids + self._reply_opening

    async def generate(
        self,
        opened: Opened,
        prompt: list[int],
        params: SamplingParams,
        request,
        on_text: Callable[[str], None] | None,
        epilogue: Callable[[list[int]], list[int]] | None = None,
    ) -> tuple[Job, str]:
        """Run one generation on ``opened``; ``on_text`` gets the reply's text as it grows."""
        if len(prompt) > self.settings.max_prompt_tokens:
            raise APIError(
                400,
                f"the request adds {len(prompt)} tokens, more than {self.settings.max_prompt_tokens}",
                code="prompt_too_long",
            )
        job = Job(
            opened.state,
            prompt,
            params,
            epilogue=epilogue,
            min_tokens=request.min_tokens,
            ignore_eos=request.ignore_eos,
        )
        text = ReplyText(self.tokenizer, request.stop, job, on_text)
        job.on_token = text.add
        started = time.perf_counter()
        await self._run(job, "generation", opened)
        self.metrics.observe_generation(len(prompt), text.token_times, started)
        reply = text.final()
        if text.end is not None:  # a stop string: the engine may have run a few tokens past it
            job.finish_reason = "stop"
        return job, reply

    async def ingest(self, opened: Opened, tokens: list[int], on_fed: Callable[[Fed], None] | None) -> Job:
        """Feed ``tokens`` after ``opened``'s state, each piece measured for ``on_fed``."""
        job = Job(opened.state, tokens, None, measure=True, on_progress=on_fed)
        await self._run(job, "ingestion", opened)
        self.metrics.ingested_tokens.inc(len(tokens))
        return job

    async def _run(self, job: Job, what: str, opened: Opened) -> None:
        """Run ``job`` on the engine: 429 when it is full or the tenant holds its share of it, 504
        past the timeout, 422 when the session's memory gave non-finite output, 500 if the job
        failed otherwise."""
        timeout = self.settings.request_timeout or None
        session_id, tenant = opened.meta.id, opened.tenant
        share = max(1, int(self.settings.max_queue * self.settings.tenant_queue_share))
        if self._queued.get(tenant, 0) >= share:
            raise APIError(
                429,
                f"this API key has {share} requests queued or running, its share (--tenant-queue-share)",
                code="tenant_queue_full",
                headers={"Retry-After": "1"},
            )
        self._queued[tenant] = self._queued.get(tenant, 0) + 1
        try:
            with self.metrics.running.track_inprogress():
                if abandoned():  # a cancellation swallowed on the way here: do not start the work
                    raise asyncio.CancelledError
                await asyncio.wait_for(self.engine.run(job), timeout)
        except EngineOverloaded as error:
            raise APIError(429, str(error), code="overloaded", headers={"Retry-After": "1"}) from error
        except asyncio.CancelledError:
            # Cancelled by a shutdown past its deadline (or a client that left): the job stopped and
            # nothing was committed. Whoever still listens gets 503, not a cut connection.
            raise APIError(
                503, "the server is shutting down; nothing was committed", code="shutting_down"
            ) from None
        except asyncio.TimeoutError as error:  # not yet the builtin TimeoutError on Python 3.10
            raise APIError(
                504, f"the {what} ran past {timeout:g} s and was cancelled", code="timeout"
            ) from error
        finally:
            self._queued[tenant] -= 1
            if not self._queued[tenant]:
                del self._queued[tenant]
        if isinstance(job.error, NotFinite):
            name = f"session {session_id!r}" if session_id else "this request"
            raise APIError(
                422,
                f"{what} failed: {job.error} ({name}); reset or delete the session",
                param="session_id" if session_id else None,
                code="state_out_of_range",
            )
        if job.error is not None:
            raise APIError(500, f"{what} failed: {job.error}", code="engine_error")

    def memory_layers(self, state: ModelState | None) -> list[dict]:
        """Per layer: the norm of the session's memory (every head and MLP layer, as of its last
        token) and its distance from the model's initial memory, where every session starts."""
        with torch.no_grad():  # the initial memory is a learned parameter
            initial = self.model.initial_state(1).map(torch.Tensor.detach)
        layers = []
        for index, (now, start) in enumerate(zip((state or initial).layers, initial.layers)):
            current = [w.to(s.device) for w, s in zip(now.memory.current_weights(), start.memory.weights)]
            layers.append(
                {
                    "layer": index,
                    "weight_norm": math.sqrt(sum(float(w.square().sum()) for w in current)),
                    "distance_from_initial": math.sqrt(
                        sum(float((w - s).square().sum()) for w, s in zip(current, start.memory.weights))
                    ),
                }
            )
        return layers

    def parse_state(self, data: bytes) -> ModelState:
        """Imported bytes, validated; a state of another model is 422, anything malformed 400. A header
        larger than any state of this model needs is refused before it is parsed."""
        declared = int.from_bytes(data[:8], "little")
        if declared > self.state_header_cap:
            raise APIError(
                400,
                f"not a valid state: a {declared:,}-byte header, and a state of this model needs at most "
                f"{self.state_header_cap:,}",
                code="invalid_state",
            )
        try:
            return from_bytes(data, self.model.config)
        except StateMismatchError as error:
            raise APIError(422, str(error), code="state_mismatch") from error
        except ValueError as error:
            raise APIError(400, f"not a valid state: {error}", code="invalid_state") from error

    def unconsumed(self, opened: Opened, messages: list[dict]) -> list[dict]:
        """The messages the session has not consumed yet (see :mod:`titans_server.transcript`)."""
        return transcript.unconsumed(opened.meta.chain_hash, opened.meta.chain_length, messages)


class ReplyText:
    """The reply's text as it grows, cut before the first stop string.

    Whole characters only, and the last ``len(longest stop) - 1`` characters wait until it is
    clear they do not begin a stop string: what was sent is never taken back.
    """

    def __init__(self, tokenizer, stops: list[str], job: Job, on_text: Callable[[str], None] | None):
        self.tokenizer, self.stops, self.job, self.on_text = tokenizer, stops, job, on_text
        self.next_text = tokenizer.stream_decoder()
        self.hold = max((len(stop) for stop in stops), default=1) - 1
        self.ids: list[int] = []
        self.text = ""  # everything decoded so far
        self.sent = 0  # characters of it sent
        self.end: int | None = None  # where a stop string cut it
        self.token_times: list[float] = []

    def add(self, token: int) -> None:
        self.token_times.append(time.perf_counter())
        if self.end is None:
            self.ids.append(token)
            self._grow(self.next_text(token), final=False)

    def final(self) -> str:
        """The whole reply; bytes of an unfinished character at the end come out as U+FFFD."""
        if self.end is None:
            whole = self.tokenizer.decode(self.ids)
            self._grow(whole[len(self.text) :] if whole.startswith(self.text) else "", final=True)
        return self.text[: self.end if self.end is not None else len(self.text)]

    def _grow(self, piece: str, final: bool) -> None:
        start = max(0, len(self.text) - self.hold)
        self.text += piece
        cuts = [i for i in (self.text.find(stop, start) for stop in self.stops) if i >= 0]
        if cuts:
            self.end = min(cuts)
            self.job.stop()
        ready = self.end if self.end is not None else len(self.text) - (0 if final else self.hold)
        if ready > self.sent:
            delta, self.sent = self.text[self.sent : ready], ready
            if self.on_text is not None:
                self.on_text(delta)


def new_session_id() -> str:
    return "sess_" + secrets.token_hex(12)
