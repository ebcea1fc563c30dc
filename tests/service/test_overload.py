"""Overload and shutdown against a real server: bounded queues and in-flight requests answer 503 with
Retry-After at once, accepted requests finish or get 504 by their deadline, health stays answerable, and a
SIGTERM under load loses none of the accepted requests.

The offered load here is short (seconds); `benchmarks/overload.py` runs the full 60 s at ~4× capacity and
measures the latencies (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support import images
from tests.support.fixture_models import CLASSIFIER, DETECTOR, repository_dict
from tests.support.server import running_server, start_server, stop_server, wait_until_ready

pytestmark = pytest.mark.slow


async def _flood(url: str, path: str, count: int, concurrency: int, payload: bytes,
                 timeout_s: float = 60) -> list[httpx.Response | Exception]:
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def one(client: httpx.AsyncClient) -> httpx.Response | Exception:
        async with gate:
            try:
                return await client.post(path, files={"image": ("x.png", payload)})
            except httpx.HTTPError as exc:
                return exc

    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        return list(await asyncio.gather(*(one(client) for _ in range(count))))


def test_overload_answers_503_with_retry_after_and_stays_healthy(artifacts_dir: Path, tmp_path: Path) -> None:
    """A small queue and a slow batch (1 s hold) against 40 concurrent clients: every answer is 200, 503 with
    Retry-After, or 504 — no 500, no dropped connection — and health answers throughout."""
    slow = {CLASSIFIER: {"batching": {"max_queue_delay_ms": 1000, "max_queue_size": 8, "queue_timeout_ms": 5000}},
            DETECTOR: {"batching": {"max_queue_delay_ms": 0, "max_queue_size": 4, "queue_timeout_ms": 2000}}}
    env = {"PACA_MAX_INFLIGHT_REQUESTS": "24"}
    with running_server(tmp_path, repository_dict(artifacts_dir, **slow), env=env) as server:

        async def scenario() -> tuple[list, list, list[float]]:
            health_latencies: list[float] = []

            async def probe_health() -> None:
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                    for _ in range(20):
                        started = time.perf_counter()
                        response = await client.get("/v2/health/live")
                        assert response.status_code == 200
                        health_latencies.append(time.perf_counter() - started)
                        await asyncio.sleep(0.1)

            classify, detect, _ = await asyncio.gather(
                _flood(server.url, f"/v1/models/{CLASSIFIER}/classify", 80, 40, images.png(3)),
                _flood(server.url, f"/v1/models/{DETECTOR}/detect", 40, 20, images.png(4)),
                probe_health(),
            )
            return classify, detect, health_latencies

        classify, detect, health = asyncio.run(scenario())
        for results in (classify, detect):
            assert not [r for r in results if isinstance(r, Exception)], "connections failed under overload"
            statuses = Counter(r.status_code for r in results)
            assert set(statuses) <= {200, 503, 504}, statuses
            assert statuses[200] > 0 and statuses[503] > 0, statuses
            for response in results:
                if response.status_code == 503:
                    assert int(response.headers["retry-after"]) >= 1 and response.json()["request_id"]
        print(f"health p100 under overload: {max(health) * 1000:.1f} ms")
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200  # ready afterwards
        ok = httpx.post(f"{server.url}/v1/models/{CLASSIFIER}/classify", files={"image": images.png(5)}, timeout=30)
        assert ok.status_code == 200


def test_sigterm_under_load_loses_no_accepted_request(artifacts_dir: Path, tmp_path: Path) -> None:
    """During a steady stream of requests, SIGTERM: readiness turns false at once, requests keep being served
    for the shutdown delay, then the listener closes. Every request the server accepted (its access log)
    was answered to the client; the rest were refused cleanly (503, or a connection that never got in)."""
    hold = {CLASSIFIER: {"batching": {"max_queue_delay_ms": 50, "max_queue_size": 256, "queue_timeout_ms": 60000}}}
    server = start_server(tmp_path, repository_dict(artifacts_dir, **hold), env={"PACA_SHUTDOWN_DELAY_S": "1.5"})
    try:
        wait_until_ready(server)
        outcomes: Counter[str] = Counter()
        readiness_after_signal: list[int] = []

        async def client_loop(client: httpx.AsyncClient, stop_at: float) -> None:
            while time.monotonic() < stop_at:
                try:
                    response = await client.post(f"/v1/models/{CLASSIFIER}/classify", files={"image": images.png(7)})
                    outcomes[str(response.status_code)] += 1
                except httpx.TransportError:  # the connection never got in: refused, or reset from the backlog
                    outcomes["refused"] += 1
                    await asyncio.sleep(0.05)

        async def scenario() -> None:
            stop_at = time.monotonic() + 5
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                workers = [asyncio.create_task(client_loop(client, stop_at)) for _ in range(8)]
                await asyncio.sleep(1.0)
                server.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.2)
                async with httpx.AsyncClient(base_url=server.url, timeout=5) as probe:
                    readiness_after_signal.append((await probe.get("/v2/health/ready")).status_code)
                await asyncio.gather(*workers)

        asyncio.run(scenario())
        assert server.process.wait(30) in (0, -signal.SIGTERM)
        accepted = Counter(str(entry["status"]) for entry in _access_log(server.log())
                           if entry.get("path") == f"/v1/models/{CLASSIFIER}/classify")
        print("client outcomes:", dict(outcomes), "server accepted:", dict(accepted))
        assert readiness_after_signal == [503]
        assert set(outcomes) <= {"200", "503", "refused"} and outcomes["200"] > 0
        assert accepted["200"] == outcomes["200"] and accepted["503"] == outcomes["503"], "an accepted request was lost"
        assert set(accepted) <= {"200", "503"}
        assert "shutting down" in server.log()
    finally:
        stop_server(server)


def _access_log(text: str) -> list[dict]:
    entries = []
    for line in text.splitlines():
        if line.startswith("{") and '"paca.access"' in line:
            entries.append(json.loads(line))
    return entries
