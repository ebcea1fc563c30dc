"""The server's front door, before any route runs: authentication, the in-flight request limit, and the
body's size and time limits — also for chunked bodies, which declare no length.

The body limits are enforced on the ASGI `receive` channel itself, so every reader (raw bodies, JSON,
multipart parsing) is bound by them: past `max_request_bytes` the read raises 413, and a body that has
not fully arrived within `body_timeout_s` raises 408.
"""

from __future__ import annotations

import asyncio
import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import check_api_key, presented_key
from service.errors import Overloaded, PayloadTooLarge, RequestTimeout, ServiceError
from service.request_context import send_error
from service.settings import ServerSettings

INFERENCE_PATH = re.compile(r"^/v[12]/models/[^/]+(?:/versions/[^/]+)?/(?:infer|classify|detect|segment|explain)$")
OPEN_PREFIXES = ("/v2/health/", "/metrics", "/docs", "/redoc", "/openapi.json")


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.settings
        path = scope["path"]
        headers = Headers(scope=scope)
        try:
            if settings.api_keys and (settings.auth_health or not path.startswith(OPEN_PREFIXES)):
                check_api_key(settings, presented_key(headers.get("authorization"), headers.get("x-api-key")))
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > settings.max_request_bytes:
                raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of "
                                      f"{settings.max_request_bytes} bytes")
            inference = scope["method"] == "POST" and INFERENCE_PATH.match(path) is not None
            if inference and self.inflight >= settings.max_inflight_requests:
                raise Overloaded(f"the server is at its limit of {settings.max_inflight_requests} requests in "
                                 "progress; retry shortly")
        except ServiceError as exc:
            await send_error(scope, receive, send, exc.status_code, exc.message, exc.headers)
            return
        if inference:
            self.inflight += 1
        try:
            await self.app(scope, self._bounded(receive), send)
        finally:
            if inference:
                self.inflight -= 1

    def _bounded(self, receive: Receive) -> Receive:
        """`receive` that counts body bytes and gives the whole body `body_timeout_s` to arrive."""
        limit, timeout_s = self.settings.max_request_bytes, self.settings.body_timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        received = 0
        complete = False

        async def bounded() -> Message:
            nonlocal received, complete
            if complete:  # after the body: waiting for a disconnect is not bounded
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(f"the request body did not arrive within {timeout_s:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
                complete = not message.get("more_body", False)
            return message

        return bounded
