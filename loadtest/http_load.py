"""The HTTP client of every load generator (`paca loadtest`, benchmarks/overload.py, soak.py, serving.py).

aiohttp, not httpx, for the hot loops: against `paca serve` (REST classify, 64 requests in flight) httpx's
AsyncClient spent about 5 ms of client CPU per request and aiohttp about 0.2 ms, so on a 2-core machine an
httpx load generator measured itself rather than the server. httpx stays where one request is made.

One session per event loop (aiohttp sessions are bound to the loop that made them), with a connection pool as
large as the load: aiohttp's default pool of 100 connections would silently cap the concurrency.
"""

from __future__ import annotations

import aiohttp


def load_session(url: str | None, connections: int, timeout_s: float) -> aiohttp.ClientSession:
    """A session for `connections` requests at once, each bounded by `timeout_s` in all (waiting for a pooled
    connection, connecting, sending, reading the whole answer). `url`: the base of paths given to `path()`
    (None when the senders use absolute URLs). Must be made, used and closed inside one running event loop."""
    if connections < 1:
        raise ValueError("connections must be at least 1")
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    return aiohttp.ClientSession(base_url(url) if url is not None else None, connector=connector,
                                 timeout=aiohttp.ClientTimeout(total=timeout_s))


def base_url(url: str) -> str:
    """aiohttp wants its base URL to end with '/' (and joins relative paths onto it, as httpx's base_url does)."""
    return url if url.endswith("/") else url + "/"


def path(request_path: str) -> str:
    """A request path ('/v1/models/m/classify?k=5') relative to the session's base URL, so that a base with a
    path prefix (http://host/prefix) keeps it: aiohttp would resolve an absolute path against the host."""
    return request_path.lstrip("/")


def failure_status(exc: BaseException) -> str:
    """The status recorded for a request that got no HTTP answer: `timeout`, or the transport error's name."""
    return "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__


TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)  # what a request without an HTTP answer raises
