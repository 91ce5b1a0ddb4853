"""HTTP connections: uvicorn's h11 protocol with limits on what a connection may hold.

uvicorn caps a request head's size only while it is incomplete (``h11_max_incomplete_event_size``:
a 100 KB head in one write passed) and closes a connection left idle after a response
(``timeout_keep_alive``); nothing bounds a connection that sends its head or its body slowly, or
how many are open. Here:

- every request head must arrive within ``header_timeout`` seconds of the connection opening or of
  the previous response completing, and be at most ``max_header_bytes`` however it arrives (else
  400 ``header_too_large``);
- a body must average ``min_body_rate`` bytes a second over each ``body_rate_window`` (a window in
  which the server itself paused reading, or the client waits for ``100 Continue``, does not count),
  else the connection is closed;
- past ``max_connections`` open connections, a new one is answered 503 and closed.

Each refusal is counted in ``titans:refusals_total`` by its code.
"""

from __future__ import annotations

import asyncio
import json
import resource

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from titans_server.metrics import Metrics
from titans_server.settings import Settings

RESERVED_FILES = 64  # file descriptors kept for Redis, the model, logs and the CPU worker


class GuardedH11(H11Protocol):
    """h11 with the limits of the module docstring (class attributes, set by :func:`guarded`)."""

    header_timeout = 10.0
    max_header_bytes = 16384
    min_body_rate = 1024
    body_rate_window = 10.0
    max_connections = 1000
    metrics: Metrics | None = None

    _deadline: asyncio.TimerHandle | None = None
    _body_check: asyncio.TimerHandle | None = None
    _head_bytes = 0  # of the head now arriving
    _tail = b""  # the last bytes seen of it: its end may straddle two reads
    _window_bytes = 0  # body bytes in the current window

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(503, "too_many_connections", "the server holds as many connections as it may")
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and not self._head_fits(data):
            self._refuse(400, "header_too_large", f"the request head is over {self.max_header_bytes} bytes")
            return
        if self.conn.their_state is h11.SEND_BODY:
            self._window_bytes += len(data)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in (or the connection failed)
            self._disarm()
        if self.conn.their_state is h11.SEND_BODY and self._body_check is None:
            self._window_bytes = 0
            self._body_check = self.loop.call_later(self.body_rate_window, self._check_body_rate)

    def on_response_complete(self) -> None:
        # Bytes behind a fully read request are the next one's head, pipelined: not yet counted.
        buffered = bytes(self.conn.trailing_data[0]) if self.conn.their_state is h11.DONE else b""
        if buffered and not self._head_fits(buffered):
            self._refuse(400, "header_too_large", f"the request head is over {self.max_header_bytes} bytes")
            return
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request's head

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._body_check is not None:
            self._body_check.cancel()
        super().connection_lost(exc)

    def _head_fits(self, data: bytes) -> bool:
        """Count ``data`` into the head now arriving; whether the head stays within the limit."""
        seen = self._tail + data
        end = seen.find(b"\r\n\r\n")
        if end == -1:
            self._head_bytes += len(data)
            self._tail = seen[-3:]
            return self._head_bytes <= self.max_header_bytes
        size = self._head_bytes + end + 4 - len(self._tail)
        self._head_bytes, self._tail = 0, b""
        return size <= self.max_header_bytes

    def _check_body_rate(self) -> None:
        self._body_check = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        excused = self.flow.read_paused or getattr(self.cycle, "waiting_for_100_continue", False)
        if not excused and self._window_bytes < self.min_body_rate * self.body_rate_window:
            self._count("body_too_slow")
            self.transport.close()
            return
        self._window_bytes = 0
        self._body_check = self.loop.call_later(self.body_rate_window, self._check_body_rate)

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` in OpenAI's error shape and close, whatever the connection was doing."""
        self._count(code)
        kind = "invalid_request_error" if status == 400 else "service_unavailable"
        body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
        reason = "Bad Request" if status == 400 else "Service Unavailable"
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
            f"\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        self.transport.close()

    def _count(self, code: str) -> None:
        if self.metrics is not None:
            self.metrics.refusals.labels(code).inc()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.transport.close()


def connection_limit(wanted: int) -> int:
    """``wanted``, lowered to fit the process's open-file limit (a socket is a file)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - RESERVED_FILES))


def guarded(settings: Settings, metrics: Metrics) -> type[GuardedH11]:
    """The protocol class uvicorn serves with, for these settings."""
    limits = {
        "header_timeout": settings.header_timeout,
        "max_header_bytes": settings.max_header_bytes,
        "min_body_rate": settings.min_body_rate,
        "body_rate_window": settings.body_rate_window,
        "max_connections": connection_limit(settings.max_connections),
        "metrics": metrics,
    }
    return type("GuardedH11", (GuardedH11,), limits)
