"""The API's operations without I/O: what to send and how to read the answer.

Both clients send these same calls, one with ``httpx.Client`` and one with ``httpx.AsyncClient``,
so each endpoint is described once.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent

from titans_client.errors import APIConnectionError, error_in_stream
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
Messages = str | list[dict[str, str]]
Document = str | Path
CHUNK_BYTES = 1 << 20


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response], T] = field(repr=False)
    json: Any = None
    params: dict | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    upload: Path | None = None  # a file sent in pieces (the body is never held whole)


def _json(kind: Callable[[dict], T]) -> Callable[[httpx.Response], T]:
    return lambda response: kind(response.json())


def create_session(session_id: str | None, metadata: dict[str, str] | None, ttl_seconds: int | None) -> Call:
    body = {"id": session_id, "metadata": metadata or {}, "ttl_seconds": ttl_seconds}
    return Call("POST", "/v1/sessions", _json(Session.from_json), json=body)


def list_sessions(limit: int, after: str | None) -> Call:
    params = {"limit": limit, **({"after": after} if after else {})}
    return Call("GET", "/v1/sessions", _json(SessionPage.from_json), params=params)


def get_session(session_id: str) -> Call:
    return Call("GET", f"/v1/sessions/{_id(session_id)}", _json(Session.from_json))


def delete_session(session_id: str) -> Call:
    return Call("DELETE", f"/v1/sessions/{_id(session_id)}", lambda response: None)


def fork_session(session_id: str, new_id: str | None) -> Call:
    return Call("POST", f"/v1/sessions/{_id(session_id)}/fork", _json(Session.from_json), json={"id": new_id})


def reset_session(session_id: str) -> Call:
    return Call("POST", f"/v1/sessions/{_id(session_id)}/reset", _json(Session.from_json))


def export_state(session_id: str, version: int | None = None) -> Call:
    params = None if version is None else {"version": version}
    return Call(
        "GET", f"/v1/sessions/{_id(session_id)}/state", lambda response: response.content, params=params
    )


def versions(session_id: str) -> Call:
    def read(response: httpx.Response) -> list[SessionVersion]:
        return [SessionVersion.from_json(v) for v in response.json()["data"]]

    return Call("GET", f"/v1/sessions/{_id(session_id)}/versions", read)


def restore(session_id: str, version: int, if_version: int | None) -> Call:
    body = {"version": version, **({} if if_version is None else {"if_version": if_version})}
    return Call("POST", f"/v1/sessions/{_id(session_id)}/restore", _json(Session.from_json), json=body)


def import_state(session_id: str, state: bytes | str | Path) -> Call:
    """``state``: exported bytes, or the path of a file of them."""
    data = state if isinstance(state, bytes) else Path(state).read_bytes()
    headers = {"Content-Type": "application/octet-stream"}
    return Call(
        "PUT",
        f"/v1/sessions/{_id(session_id)}/state",
        _json(Session.from_json),
        content=data,
        headers=headers,
    )


def models() -> Call:
    return Call("GET", "/v1/models", lambda response: [Model.from_json(m) for m in response.json()["data"]])


def chat(session_id: str | None, messages: Messages, stream: bool, params: dict) -> Call:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    body = {"messages": messages, "stream": stream, **_session(session_id), **params}
    return Call(
        "POST", "/v1/chat/completions", lambda r: r.json()["choices"][0]["message"]["content"], json=body
    )


def complete(session_id: str | None, prompt: str, stream: bool, params: dict) -> Call:
    body = {"prompt": prompt, "stream": stream, **_session(session_id), **params}
    return Call("POST", "/v1/completions", lambda r: r.json()["choices"][0]["text"], json=body)


def session_memory(session_id: str) -> Call:
    return Call("GET", f"/v1/sessions/{_id(session_id)}/memory", _json(SessionMemory.from_json))


def ingest(session_id: str, document: Document, bin_tokens: int) -> Call:
    """A ``Path`` is a file to upload in pieces; a ``str`` is the text itself."""
    path = f"/v1/sessions/{_id(session_id)}/ingest"
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    params = {"bin_tokens": str(bin_tokens)}
    read = _json(IngestResult.from_json)
    if isinstance(document, Path):
        if not document.is_file():
            raise FileNotFoundError(f"no file {str(document)!r} to ingest")
        return Call("POST", path, read, headers=headers, upload=document, params=params)
    return Call("POST", path, read, content=document.encode(), headers=headers, params=params)


def _id(session_id: str) -> str:
    """A session id as one URL path segment (an id with ``/`` or ``?`` must not reach another route)."""
    return quote(session_id, safe="")


def _session(session_id: str | None) -> dict:
    return {} if session_id is None else {"session_id": session_id}


def text_delta(event: ServerSentEvent) -> str | None:
    """The text a chat or completion chunk adds; None at ``[DONE]``; an error event raises."""
    if event.data == "[DONE]":
        return None
    chunk = json.loads(event.data)
    if "error" in chunk:
        raise error_in_stream(chunk)
    choices = chunk.get("choices") or [{}]
    delta = choices[0].get("delta", choices[0])
    return delta.get("content") or delta.get("text") or ""


def ingest_event(event: ServerSentEvent) -> IngestProgress | IngestResult:
    """A progress event, or the result; an error event raises."""
    data = json.loads(event.data)
    if event.event == "error":
        raise error_in_stream(data)
    return IngestResult.from_json(data) if event.event == "done" else IngestProgress.from_json(data)


# 429 and 503 answers that sending again cannot help, or that may have applied the request.
PERMANENT = {"too_many_sessions", "tenant_bytes_exceeded", "commit_uncertain"}


def error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff on 429 (server full), 503 (store unreachable) and connections that never opened.

    None of those ran the request, so sending it again is safe. ``Retry-After`` is honoured.
    """

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None: do not retry."""
        if attempt >= self.max_retries:
            return None
        if response is not None:
            if response.status_code not in (429, 503) or error_code(response) in PERMANENT:
                return None
            hinted = response.headers.get("retry-after", "")
            if hinted.isdigit():
                return min(float(hinted), self.max_delay)
        return min(self.base_delay * 2**attempt, self.max_delay) * (0.5 + random.random() / 2)


def connection_error(error: httpx.TransportError, url: str) -> APIConnectionError:
    kind = "timed out" if isinstance(error, httpx.TimeoutException) else "failed"
    return APIConnectionError(f"the request to {url} {kind}: {error}")
