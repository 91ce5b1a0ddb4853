"""HTTP connections: uvicorn's h11 protocol with a deadline for each request's head.

uvicorn caps a request head's size (``h11_max_incomplete_event_size``) and closes a connection left
idle after a response (``timeout_keep_alive``), but a connection that opens and sends nothing, or
sends its headers a byte at a time, holds a socket and a buffer for as long as the client likes.
Here every request head must arrive within ``header_timeout`` seconds of the connection opening or
of the previous response completing; otherwise the connection is closed.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadline(H11Protocol):
    """h11 with a deadline for each request head (see the module docstring)."""

    header_timeout = 10.0

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in (or the connection failed)
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request's head

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

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


def with_header_timeout(seconds: float) -> type[HeaderDeadline]:
    """The protocol class uvicorn serves with, for ``--header-timeout``."""
    return type("HeaderDeadline", (HeaderDeadline,), {"header_timeout": seconds})
