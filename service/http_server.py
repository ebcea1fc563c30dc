"""uvicorn, hardened for a public endpoint: a deadline for request headers, and a readiness drop at SIGTERM.

- `HeaderTimeoutProtocol`: uvicorn's httptools protocol closes a connection (408) whose request headers
  do not arrive within `header_timeout_s` of the connection or of the request's first byte — so idle or
  half-sent connections cannot pile up (slowloris). Bodies are bounded by the request guard.
- `GracefulServer`: at SIGTERM/SIGINT, readiness turns false at once (the load balancer stops sending),
  the server keeps serving for `shutdown_delay_s`, then uvicorn's shutdown closes the listeners and lets
  accepted requests finish (up to `exit_timeout_s`) before the lifespan drains the batchers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import FrameType

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TIMEOUT_BODY = b'{"error": "request headers did not arrive in time"}'
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    b"content-length: " + str(len(TIMEOUT_BODY)).encode() + b"\r\n\r\n" + TIMEOUT_BODY)


def header_timeout_protocol(header_timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a deadline for each request's headers."""

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_timed_out)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_timed_out(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.write(TIMEOUT_RESPONSE)
                self.transport.close()

    return HeaderTimeoutProtocol


class GracefulServer(uvicorn.Server):
    """uvicorn.Server whose first exit signal drops readiness and delays the shutdown by `delay_s`."""

    def __init__(self, config: uvicorn.Config, *, on_shutdown_signal: Callable[[], None], delay_s: float) -> None:
        super().__init__(config)
        self._on_shutdown_signal = on_shutdown_signal
        self._delay_s = delay_s
        self._exit_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._exit_at is None:
            self._on_shutdown_signal()
            self._exit_at = time.monotonic() + self._delay_s
            if self._delay_s > 0:
                return  # on_tick sets should_exit when the delay is over
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)
