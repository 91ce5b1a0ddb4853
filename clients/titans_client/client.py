"""``TitansClient`` and ``AsyncTitansClient``: the API as Python calls, on httpx.

Both send the calls of :mod:`titans_client._operations`; they differ only in how they wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import httpx
from httpx_sse import EventSource

from titans_client import _operations as op
from titans_client._operations import Call, Document, Messages, RetryPolicy
from titans_client.errors import error_from_response
from titans_client.types import (
    IngestProgress,
    IngestResult,
    Model,
    Session,
    SessionMemory,
    SessionPage,
    SessionVersion,
)

T = TypeVar("T")
Progress = Callable[[IngestProgress], None]
DEFAULT_URL = "http://127.0.0.1:8000"


class _Options:
    """What both clients share: where the server is, the key, timeouts and the retry policy."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, max_retries: int):
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self.retry = RetryPolicy(max_retries=max_retries)

    def http_options(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "headers": self.headers, "timeout": self.timeout}


class TitansClient:
    """A blocking client. ``with TitansClient(...) as client:`` closes its connections at the end.

    ``timeout`` bounds each wait for the server (seconds); 429 and 503 answers and refused
    connections are retried ``max_retries`` times with backoff before they raise.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
    ):
        self._options = _Options(base_url, api_key, timeout, max_retries)
        self._http = httpx.Client(**self._options.http_options())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TitansClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # Sessions

    def create_session(
        self, id: str | None = None, *, metadata: dict[str, str] | None = None, ttl_seconds: int | None = None
    ) -> Session:
        """A new, empty session (an id of your own, or one made up by the server)."""
        return self._send(op.create_session(id, metadata, ttl_seconds))

    def list_sessions(self, *, limit: int = 20, after: str | None = None) -> SessionPage:
        return self._send(op.list_sessions(limit, after))

    def get_session(self, session_id: str) -> Session:
        return self._send(op.get_session(session_id))

    def delete_session(self, session_id: str) -> None:
        self._send(op.delete_session(session_id))

    def fork_session(self, session_id: str, new_id: str | None = None) -> Session:
        """A copy of the session's memory under a new id; the two then learn apart."""
        return self._send(op.fork_session(session_id, new_id))

    def reset_session(self, session_id: str) -> Session:
        """Back to the model's initial memory (the id, metadata and version history stay)."""
        return self._send(op.reset_session(session_id))

    def export_state(
        self, session_id: str, path: str | Path | None = None, *, version: int | None = None
    ) -> bytes:
        """The session's memory (or a kept ``version`` of it) as safetensors bytes, also written to
        ``path`` if given."""
        data = self._send(op.export_state(session_id, version))
        if path is not None:
            Path(path).write_bytes(data)
        return data

    def versions(self, session_id: str) -> list[SessionVersion]:
        """The session's current version and the kept ones, newest first."""
        return self._send(op.versions(session_id))

    def restore(self, session_id: str, version: int, *, if_version: int | None = None) -> Session:
        """Make a kept version the newest (memory and transcript); with ``if_version``, only if the
        session is still at that version (else :class:`ConflictError`)."""
        return self._send(op.restore(session_id, version, if_version))

    def import_state(self, session_id: str, state: bytes | str | Path) -> Session:
        """Create or replace the session from exported bytes (or a file of them)."""
        return self._send(op.import_state(session_id, state))

    def models(self) -> list[Model]:
        return self._send(op.models())

    # Generation and ingestion

    @overload
    def chat(
        self, session_id: str | None, messages: Messages, *, stream: Literal[False] = False, **params
    ) -> str: ...

    @overload
    def chat(
        self, session_id: str | None, messages: Messages, *, stream: Literal[True], **params
    ) -> Iterator[str]: ...

    def chat(self, session_id, messages, *, stream=False, **params):
        """The assistant's reply to ``messages`` (a string is one user message), in the session.

        ``params`` are the OpenAI fields (``max_tokens``, ``temperature``, ``stop``, ...). With
        ``stream=True``, an iterator of text pieces as they are generated.
        """
        call = op.chat(session_id, messages, stream, params)
        return self._stream_text(call) if stream else self._send(call)

    @overload
    def complete(
        self, session_id: str | None, prompt: str, *, stream: Literal[False] = False, **params
    ) -> str: ...

    @overload
    def complete(
        self, session_id: str | None, prompt: str, *, stream: Literal[True], **params
    ) -> Iterator[str]: ...

    def complete(self, session_id, prompt, *, stream=False, **params):
        """The continuation of ``prompt`` (raw text, no chat format), like :meth:`chat`."""
        call = op.complete(session_id, prompt, stream, params)
        return self._stream_text(call) if stream else self._send(call)

    def session_memory(self, session_id: str) -> SessionMemory:
        """How far the session's memory has moved from the model's initial memory, per layer."""
        return self._send(op.session_memory(session_id))

    def ingest(
        self, session_id: str, document: Document, *, progress: Progress | None = None, bin_tokens: int = 64
    ) -> IngestResult:
        """Put a document into the session's memory: a ``Path`` is uploaded in pieces, a ``str`` is
        the text. ``progress`` is called as the server works through it, with the loss and write
        strength of each bin of ``bin_tokens`` tokens done since the last call."""
        call = op.ingest(session_id, document, bin_tokens)
        if progress is None:
            return self._send(call)
        call.params["stream"] = "true"
        with self._open(call) as response:
            for event in EventSource(response).iter_sse():
                update = op.ingest_event(event)
                if isinstance(update, IngestResult):
                    return update
                progress(update)
        raise op.APIConnectionError("the server closed the ingestion stream before it was done")

    # Transport

    def _send(self, call: Call[T]) -> T:
        with self._open(call) as response:
            response.read()
            return call.read(response)

    def _stream_text(self, call: Call) -> Iterator[str]:
        with self._open(call) as response:
            for event in EventSource(response).iter_sse():
                if (text := op.text_delta(event)) is None:
                    return
                if text:
                    yield text

    @contextmanager
    def _open(self, call: Call) -> Iterator[httpx.Response]:
        """The streamed response to ``call`` once it is not an error, retried as the policy says."""
        attempt = 0
        while True:
            try:
                request = self._http.build_request(
                    call.method,
                    call.path,
                    json=call.json,
                    params=call.params,
                    content=_chunks(call.upload) if call.upload else call.content,
                    headers=call.headers,
                )
                response = self._http.send(request, stream=True)
            except httpx.ConnectError as error:
                if (delay := self._options.retry.delay(attempt, None)) is None:
                    raise op.connection_error(error, self._options.base_url) from error
            except httpx.TransportError as error:
                raise op.connection_error(error, self._options.base_url) from error
            else:
                try:
                    if not response.is_error:
                        yield response
                        return
                    response.read()
                except httpx.TransportError as error:
                    raise op.connection_error(error, self._options.base_url) from error
                finally:
                    response.close()
                if (delay := self._options.retry.delay(attempt, response)) is None:
                    raise error_from_response(response)
            time.sleep(delay)
            attempt += 1


class AsyncTitansClient:
    """The same API as :class:`TitansClient`, awaited: ``async with AsyncTitansClient(...) as client:``."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
    ):
        self._options = _Options(base_url, api_key, timeout, max_retries)
        self._http = httpx.AsyncClient(**self._options.http_options())

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncTitansClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def create_session(
        self, id: str | None = None, *, metadata: dict[str, str] | None = None, ttl_seconds: int | None = None
    ) -> Session:
        return await self._send(op.create_session(id, metadata, ttl_seconds))

    async def list_sessions(self, *, limit: int = 20, after: str | None = None) -> SessionPage:
        return await self._send(op.list_sessions(limit, after))

    async def get_session(self, session_id: str) -> Session:
        return await self._send(op.get_session(session_id))

    async def delete_session(self, session_id: str) -> None:
        await self._send(op.delete_session(session_id))

    async def fork_session(self, session_id: str, new_id: str | None = None) -> Session:
        return await self._send(op.fork_session(session_id, new_id))

    async def reset_session(self, session_id: str) -> Session:
        return await self._send(op.reset_session(session_id))

    async def export_state(
        self, session_id: str, path: str | Path | None = None, *, version: int | None = None
    ) -> bytes:
        data = await self._send(op.export_state(session_id, version))
        if path is not None:
            await asyncio.to_thread(Path(path).write_bytes, data)
        return data

    async def versions(self, session_id: str) -> list[SessionVersion]:
        return await self._send(op.versions(session_id))

    async def restore(self, session_id: str, version: int, *, if_version: int | None = None) -> Session:
        return await self._send(op.restore(session_id, version, if_version))

    async def import_state(self, session_id: str, state: bytes | str | Path) -> Session:
        return await self._send(op.import_state(session_id, state))

    async def models(self) -> list[Model]:
        return await self._send(op.models())

    @overload
    async def chat(
        self, session_id: str | None, messages: Messages, *, stream: Literal[False] = False, **params
    ) -> str: ...

    @overload
    async def chat(
        self, session_id: str | None, messages: Messages, *, stream: Literal[True], **params
    ) -> AsyncIterator[str]: ...

    async def chat(self, session_id, messages, *, stream=False, **params):
        call = op.chat(session_id, messages, stream, params)
        return self._stream_text(call) if stream else await self._send(call)

    @overload
    async def complete(
        self, session_id: str | None, prompt: str, *, stream: Literal[False] = False, **params
    ) -> str: ...

    @overload
    async def complete(
        self, session_id: str | None, prompt: str, *, stream: Literal[True], **params
    ) -> AsyncIterator[str]: ...

    async def complete(self, session_id, prompt, *, stream=False, **params):
        call = op.complete(session_id, prompt, stream, params)
        return self._stream_text(call) if stream else await self._send(call)

    async def session_memory(self, session_id: str) -> SessionMemory:
        return await self._send(op.session_memory(session_id))

    async def ingest(
        self, session_id: str, document: Document, *, progress: Progress | None = None, bin_tokens: int = 64
    ) -> IngestResult:
        call = op.ingest(session_id, document, bin_tokens)
        if progress is None:
            return await self._send(call)
        call.params["stream"] = "true"
        async with self._open(call) as response:
            async for event in EventSource(response).aiter_sse():
                update = op.ingest_event(event)
                if isinstance(update, IngestResult):
                    return update
                progress(update)
        raise op.APIConnectionError("the server closed the ingestion stream before it was done")

    async def _send(self, call: Call[T]) -> T:
        async with self._open(call) as response:
            await response.aread()
            return call.read(response)

    async def _stream_text(self, call: Call) -> AsyncIterator[str]:
        async with self._open(call) as response:
            async for event in EventSource(response).aiter_sse():
                if (text := op.text_delta(event)) is None:
                    return
                if text:
                    yield text

    @asynccontextmanager
    async def _open(self, call: Call) -> AsyncIterator[httpx.Response]:
        attempt = 0
        while True:
            try:
                request = self._http.build_request(
                    call.method,
                    call.path,
                    json=call.json,
                    params=call.params,
                    content=_achunks(call.upload) if call.upload else call.content,
                    headers=call.headers,
                )
                response = await self._http.send(request, stream=True)
            except httpx.ConnectError as error:
                if (delay := self._options.retry.delay(attempt, None)) is None:
                    raise op.connection_error(error, self._options.base_url) from error
            except httpx.TransportError as error:
                raise op.connection_error(error, self._options.base_url) from error
            else:
                try:
                    if not response.is_error:
                        yield response
                        return
                    await response.aread()
                except httpx.TransportError as error:
                    raise op.connection_error(error, self._options.base_url) from error
                finally:
                    await response.aclose()
                if (delay := self._options.retry.delay(attempt, response)) is None:
                    raise error_from_response(response)
            await asyncio.sleep(delay)
            attempt += 1


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while piece := file.read(op.CHUNK_BYTES):
            yield piece


async def _achunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while piece := await asyncio.to_thread(file.read, op.CHUNK_BYTES):
            yield piece
