"""Request ids, access logs and per-route latency as a plain ASGI middleware.

Starlette's `BaseHTTPMiddleware` (`@app.middleware("http")`) runs every request through an extra task
and memory stream; a load profile showed it on every request. This wraps `send` instead.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logging_setup import request_id_var

access_log = logging.getLogger("paca.access")

Observer = Callable[[Scope, int, float], None]


def choose_request_id(incoming: str) -> str:
    """Keep a caller's id when it is short and printable, otherwise make one."""
    return incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex


class RequestContextMiddleware:
    """Sets the request-id context, adds `X-Request-ID` to the response, logs and observes latency."""

    def __init__(self, app: ASGIApp, observe: Observer) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = choose_request_id(Headers(scope=scope).get("x-request-id", ""))
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            self.observe(scope, status, duration)
            access_log.info(
                "%s %s %d", scope["method"], scope["path"], status,
                extra={"method": scope["method"], "path": scope["path"], "status": status,
                       "duration_ms": round(duration * 1000, 2), "request_id": request_id},
            )
            request_id_var.reset(token)
