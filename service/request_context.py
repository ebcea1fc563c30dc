"""Request ids, timings (`Server-Timing`), access logs, per-route latency and the last line of defence
against unexpected errors, as a plain ASGI middleware (outermost).

Starlette's `BaseHTTPMiddleware` (`@app.middleware("http")`) runs every request through an extra task
and memory stream; a load profile showed it on every request. This wraps `send` instead. An exception
no handler turned into a response becomes a 500 `{"error", "request_id"}` here, inside the request's
context, so it carries its `X-Request-ID` like every other answer.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import tracing
from service.logging_setup import request_id_var
from service.timing import RequestTimings, request_timings

access_log = logging.getLogger("paca.access")
log = logging.getLogger("paca.server")

Observer = Callable[[Scope, int, float, RequestTimings], None]


# Generated ids: a random per-process prefix and a counter — unique without a syscall per request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def choose_request_id(incoming: str) -> str:
    """Keep a caller's id when it is short and printable, otherwise make one."""
    return incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else new_request_id()


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message, "request_id": request_id_var.get()})


async def send_error(scope: Scope, receive: Receive, send: Send, status: int, message: str,
                     headers: Mapping[str, str] | None = None) -> None:
    """Answer with the JSON error body every error of this server has."""
    body = error_body(message)
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def draining(scope: Scope) -> bool:
    manager = getattr(scope["app"].state, "manager", None)
    return bool(manager is not None and manager.shutting_down)


class RequestContextMiddleware:
    """Sets the request-id context, adds `X-Request-ID` to the response, logs, observes latency, and turns an
    unhandled exception into a 500 with the request id."""

    def __init__(self, app: ASGIApp, observe: Observer, traced: bool = False) -> None:
        self.app = app
        self.observe = observe
        self.traced = traced

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = choose_request_id(Headers(scope=scope).get("x-request-id", ""))
        token = request_id_var.set(request_id)
        timings = RequestTimings()
        timings_token = request_timings.set(timings)
        span = tracing.start_request_span(scope["method"], scope["path"], Headers(scope=scope), request_id) \
            if self.traced else None
        if span is not None:
            timings.trace = span.get_span_context()
        started = timings.started
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                headers["Server-Timing"] = timings.header()
                if span is not None:
                    headers["traceparent"] = tracing.traceparent(span)
                if draining(scope):  # clients stop reusing connections before the listener closes
                    headers["Connection"] = "close"
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not response_started:  # (FastAPI's error handler may already have answered: then only the log)
                await send_error(scope, receive, send_with_id, 500, "internal error; the server log has the details "
                                 f"under request id {request_id}")
        finally:
            duration = time.perf_counter() - started
            self.observe(scope, status, duration, timings)
            if span is not None:
                tracing.end_request_span(span, timings, http_status=status)
            access_log.info(
                "%s %s %d", scope["method"], scope["path"], status,
                extra={"method": scope["method"], "path": scope["path"], "status": status,
                       "duration_ms": round(duration * 1000, 2), "request_id": request_id},
            )
            request_timings.reset(timings_token)
            request_id_var.reset(token)
