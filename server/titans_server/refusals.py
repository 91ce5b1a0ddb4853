"""Requests refused by a limit: each limit has an error code of its own, and every refusal is
counted in ``titans:refusals_total{reason="<code>"}``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:  # errors.py counts refusals through this module
    from titans_server.errors import APIError

# Every limit's code, and what passed it.
REASONS = {
    "request_too_large": "a body over --max-request-bytes or --max-ingest-bytes, or a document over "
    "--max-ingest-tokens",
    "header_too_large": "a request head over --max-header-bytes, however it arrived",
    "body_too_slow": "a body slower than --min-body-rate (the connection is closed)",
    "too_many_connections": "a connection past --max-connections (closed)",
    "too_many_json_values": "a JSON body with more than --max-json-values values",
    "invalid_text": "a string that is not text: invalid UTF-8, or a lone surrogate",
    "metadata_too_large": "session metadata over --max-metadata-keys or --max-metadata-bytes",
    "too_many_messages": "a chat with more than --max-messages messages",
    "prompt_too_long": "a prompt over --max-prompt-bytes or --max-prompt-tokens",
    "cpu_busy": "a tenant's requests being tokenised at --max-cpu-jobs-per-tenant",
    "session_queue_full": "a session with --max-waiting-per-session requests waiting",
    "tenant_queue_full": "a tenant's requests at its --tenant-queue-share of the engine queue",
    "overloaded": "the engine queue at --max-queue",
    "too_many_sessions": "a tenant at --max-sessions-per-tenant",
    "cross_site": "a state-changing request a browser sent from another site (keyless server)",
    "host_not_allowed": "a Host header not in --allowed-hosts",
    "duplicate_authorization": "a request with more than one Authorization header",
}


def count(state, code: str | None) -> None:
    """Count a refusal on the app whose ``state`` this is (before its lifespan: not counted)."""
    metrics = getattr(state, "metrics", None)
    if metrics is not None and code in REASONS:
        metrics.refusals.labels(code).inc()


async def send(error: APIError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with ``error`` from a middleware, counted."""
    count(scope["app"].state, error.code)
    await error.response()(scope, receive, send)
