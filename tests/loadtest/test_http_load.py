"""The aiohttp sender of the load generators against real loopback sockets: what it records for a refused
connection, a server that never answers, one that hangs up, wrong answers; the base URL's path prefix; and a
pool that really holds more than aiohttp's default 100 connections at once."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from loadtest import driver, http_load
from loadtest.workload import HttpRequest
from tests.support.stub_http import StubHandler, serving

CLASSIFY = HttpRequest("/v1/models/m/classify?k=5", b"png bytes", {"Content-Type": "image/png"}, "x.png")


def _send(url: str, request: HttpRequest, endpoint: str = "classify", *, timeout_s: float = 10,
          connections: int = 4) -> tuple[str, bool]:
    async def go() -> tuple[str, bool]:
        async with http_load.load_session(url, connections, timeout_s) as session:
            return await driver.http_sender(session, endpoint)(request)

    return asyncio.run(go())


def test_a_refused_connection_is_recorded_as_the_transport_error() -> None:
    with socket.socket() as bound:  # bound, never listening: the kernel refuses connections to it
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        assert _send(url, CLASSIFY) == ("ClientConnectorError", False)

        async def open_loop() -> list[driver.Sample]:
            async with http_load.load_session(url, 4, 10) as session:
                return await driver.open_loop(driver.http_sender(session, "classify"), [CLASSIFY], [0.0, 0.01], 4)

        samples = asyncio.run(open_loop())
    assert [(s.status, s.ok) for s in samples] == [("ClientConnectorError", False)] * 2


def test_a_server_that_never_answers_is_recorded_as_timeout() -> None:
    with socket.socket() as silent:  # listening, so connections complete, but nothing is ever read or answered
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        assert _send(f"http://127.0.0.1:{silent.getsockname()[1]}", CLASSIFY, timeout_s=0.5) == ("timeout", False)


class _Handler(StubHandler):
    """Answers by path: /hangup closes without a word, /v2... a binary-tensor answer, /busy 503, /wrong a 200 with
    the wrong shape, anything else a one-result REST answer. Records every path; /barrier... first waits until
    `barrier` requests are inside the server at the same time."""

    paths: ClassVar[list[str]] = []
    barrier: ClassVar[threading.Barrier | None] = None

    def do_POST(self) -> None:  # http.server calls do_<METHOD>
        self.read_body()
        self.paths.append(self.path)
        if self.path.endswith("/hangup"):
            self.close_connection = True
            return
        if self.path.startswith("/barrier") and self.barrier is not None:
            self.barrier.wait(timeout=30)
        if self.path.startswith("/v2"):
            header = json.dumps({"outputs": [{"name": "logits", "parameters": {"binary_data_size": 8}}]}).encode()
            self.answer(200, header + bytes(8), {"inference-header-content-length": str(len(header))})
        elif self.path.endswith("/busy"):
            self.answer(503, b'{"error": "queue full"}', {})
        elif self.path.endswith("/wrong"):
            self.answer(200, b'{"results": []}', {})
        else:
            self.answer(200, b'{"results": [{"label": "3"}]}', {})


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.paths = []
    # The listen backlog: every connection of the pool test is accepted at once.
    with serving(_Handler, backlog=256) as url:
        yield url


def test_statuses_and_answer_checks_of_a_real_server(server: str) -> None:
    assert _send(server, CLASSIFY) == ("200", True)
    assert _send(server, HttpRequest("/v1/wrong", b"x", {}, "x.png")) == ("200", False)  # 200, wrong shape
    assert _send(server, HttpRequest("/v1/busy", b"x", {}, "x.png")) == ("503", False)
    assert _send(server, HttpRequest("/v1/hangup", b"x", {}, "x.png")) == ("ServerDisconnectedError", False)
    # v2: the header length comes from a lower-case header name (HTTP names are case-insensitive)
    v2 = HttpRequest("/v2/models/m/infer", b"tensor", {"Content-Type": "application/octet-stream"}, "x.png")
    assert _send(server, v2, "v2") == ("200", True)
    assert _Handler.paths[0] == "/v1/models/m/classify?k=5"


def test_a_base_url_with_a_path_prefix_keeps_it(server: str) -> None:
    assert _send(f"{server}/prefix", CLASSIFY) == ("200", True)
    assert _send(f"{server}/prefix/", CLASSIFY) == ("200", True)
    assert _Handler.paths == ["/prefix/v1/models/m/classify?k=5"] * 2


def test_the_pool_holds_more_than_aiohttps_default_100_connections(server: str) -> None:
    # The server answers only once 120 requests are inside it at the same moment: with aiohttp's default
    # pool (100) the 101st never gets a connection, the barrier breaks and every request fails.
    _Handler.barrier = threading.Barrier(120)
    request = HttpRequest("/barrier", b"x", {}, "x.png")

    async def go() -> list[tuple[str, bool]]:
        async with http_load.load_session(server, 120, 20) as session:
            send = driver.http_sender(session, "classify")
            return await asyncio.gather(*(send(request) for _ in range(120)))

    try:
        assert asyncio.run(go()) == [("200", True)] * 120
    finally:
        _Handler.barrier = None


def test_load_session_refuses_an_empty_pool() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        http_load.load_session("http://127.0.0.1:1", 0, 1)
