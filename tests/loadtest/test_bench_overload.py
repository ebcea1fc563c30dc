"""benchmarks/overload.py's open-loop sender, in this process, against real loopback sockets: every scheduled
arrival is sent and accounted for once (answered by status, or failed by transport error), with a start lag
and a send window; a refused connection is counted under aiohttp's error name. Rates are not judged here."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from benchmarks.overload import _send_open_loop
from tests.support.stub_http import StubHandler, serving


class _Handler(StubHandler):
    """Every other request is turned away with 503 and Retry-After, as an overloaded server does."""

    count = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # http.server calls do_<METHOD>
        self.read_body()
        with self.lock:
            type(self).count += 1
            busy = self.count % 2 == 0
        if busy:
            self.answer(503, b'{"error": "queue full"}', {"Retry-After": "1"})
        else:
            self.answer(200, b'{"results": [{}]}')


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.count = 0
    with serving(_Handler) as url:
        yield url


def _run(url: str, rate: float, seconds: float) -> dict:
    results: queue.Queue = queue.Queue()
    _send_open_loop(url, "/v1/models/m/classify", b"png", rate, seconds, time.time(), results)
    return results.get_nowait()


def test_every_arrival_is_sent_and_accounted_for(server: str) -> None:
    record = _run(server, 40, 0.49)
    assert record["sent"] == 20  # arrivals at 0, 25, …, 475 ms
    assert dict(record["statuses"]) == {200: 10, 503: 10} and not record["errors"]
    assert len(record["ok"]) == 10 and len(record["rejected"]) == 10
    assert dict(record["retry_after"]) == {"1": 10}  # read from the answers' headers
    assert len(record["lag"]) == 20 and all(lag >= 0 for lag in record["lag"])
    assert record["send_seconds"] >= 0.49


def test_a_refused_connection_is_counted_under_the_transport_error() -> None:
    with socket.socket() as bound:  # bound, never listening: connections to it are refused
        bound.bind(("127.0.0.1", 0))
        record = _run(f"http://127.0.0.1:{bound.getsockname()[1]}", 20, 0.24)
    assert record["sent"] == 5 and dict(record["errors"]) == {"ClientConnectorError": 5}
    assert not record["statuses"] and not record["ok"]
