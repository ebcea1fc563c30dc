"""Overload: offer ~4× a model's capacity for a minute and measure what clients see.

For each endpoint (REST classify and detect of the demo models by default): a closed-loop run measures
capacity (requests/s), then an open loop offers `--factor` × capacity for `--seconds` — arrivals follow a
fixed schedule and never wait for answers, spread over `--clients` processes so the load generator keeps
up. Meanwhile another process polls /v2/health/ready and /metrics every 50 ms, and the server's RSS is
sampled. Reported: status counts, latency percentiles of 200s, how fast 503s
arrive, 504s and the worst latency against the queue deadline, health/metrics latency, RSS, readiness
afterwards, and whether the client kept up: `achieved_send_per_s` (requests that really started, per second
of the window they took) against `offered_per_s`, and `send_lag_ms` (how late each one started against its
schedule). All load goes through aiohttp (loadtest/http_load.py): an httpx client cost ~25× more CPU per
request and could not offer 4× capacity on a 2-core machine. Loopback only.

    .venv/bin/python benchmarks/overload.py --json overload.json            # full run (~3 min)
    .venv/bin/python benchmarks/overload.py --seconds 5 --capacity-seconds 2  # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import queue
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from loadtest import http_load  # noqa: E402
from tests.support.server import ServerProcess, exit_cleanly_on_sigterm, running_server  # noqa: E402

DEMO = REPO_ROOT / "artifacts" / "demo"
PNG = {"Content-Type": "image/png"}
MAX_CONNECTIONS = 2000  # per load process: answers can be slow (queue deadline) while arrivals keep coming
ENDPOINTS = {
    "classify": ("demo-digits-classifier", "classify", "digit_07_label7.png"),
    "detect": ("demo-digits-detector", "detect", "scene_00.png"),
    "segment": ("demo-digits-segmenter", "segment", "scene_01.png"),
}


@dataclass
class Phase:
    endpoint: str
    offered_per_s: float
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    ok_ms: list[float] = field(default_factory=list)
    rejected_ms: list[float] = field(default_factory=list)
    timeout_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    health_ms: list[float] = field(default_factory=list)
    metrics_ms: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    retry_after: Counter = field(default_factory=Counter)
    achieved_per_s: float = 0.0
    lag_ms: list[float] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def capacity(url: str, path: str, image: bytes, seconds: float, concurrency: int) -> float:
    """Closed loop: completed requests per second with `concurrency` clients."""
    done = 0
    stop_at = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            async with session.post(http_load.path(path), data=image, headers=PNG) as response:
                await response.read()
                done += response.status == 200

    async with http_load.load_session(url, concurrency, 120) as session:
        started = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return done / (time.monotonic() - started)


def _send_open_loop(url: str, path: str, image: bytes, rate: float, seconds: float, start_at: float,
                    results: multiprocessing.Queue) -> None:
    """One load process: requests at `rate`/s from `start_at` (time.time) for `seconds`, answers not awaited.
    A request's lag is how late it really started (its coroutine ran) against its schedule; the send window
    ends when the last one started, so a client that falls behind shows a lower achieved rate, not the rate it
    merely scheduled."""

    async def go() -> dict[str, object]:
        record: dict[str, object] = {"sent": 0, "statuses": Counter(), "errors": Counter(), "ok": [], "rejected": [],
                                     "timeout": [], "retry_after": Counter(), "lag": []}
        async with http_load.load_session(url, MAX_CONNECTIONS, 120) as session:
            last_start = 0.0

            async def one(scheduled: float) -> None:
                nonlocal last_start
                started = time.perf_counter()
                last_start = time.monotonic()
                record["lag"].append((last_start - scheduled) * 1000)
                try:
                    async with session.post(http_load.path(path), data=image, headers=PNG) as response:
                        await response.read()
                except http_load.TRANSPORT_ERRORS as exc:
                    record["errors"][http_load.failure_status(exc)] += 1
                    return
                elapsed = (time.perf_counter() - started) * 1000
                record["statuses"][response.status] += 1
                bucket = {200: "ok", 503: "rejected", 504: "timeout"}.get(response.status)
                if bucket:
                    record[bucket].append(elapsed)
                if response.status == 503:
                    record["retry_after"][response.headers.get("Retry-After", "none")] += 1

            await asyncio.sleep(max(0.0, start_at - time.time()))
            tasks, interval, started = [], 1.0 / rate, time.monotonic()
            next_at = started
            while next_at < started + seconds:
                tasks.append(asyncio.create_task(one(next_at)))
                record["sent"] += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            window_end = time.monotonic()
            await asyncio.gather(*tasks)
            record["send_seconds"] = max(window_end, last_start) - started
        return record

    results.put(asyncio.run(go()))


def _poll(url: str, seconds: float, start_at: float, results: multiprocessing.Queue) -> None:
    """Health and metrics latency, every 50 ms, from a process of its own."""

    async def go() -> dict[str, list[float]]:
        latencies: dict[str, list[float]] = {"/v2/health/ready": [], "/metrics": []}
        await asyncio.sleep(max(0.0, start_at - time.time()))
        async with http_load.load_session(url, 1, 10) as session:
            stop_at = time.monotonic() + seconds
            while time.monotonic() < stop_at:
                for target, sink in latencies.items():
                    started = time.perf_counter()
                    async with session.get(http_load.path(target)) as response:
                        await response.read()
                    sink.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.05)
        return latencies

    results.put(asyncio.run(go()))


async def open_loop(server: ServerProcess, phase: Phase, path: str, image: bytes, seconds: float,
                    clients: int) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 3.0  # every process starts sending at the same moment
    senders = [context.Process(target=_send_open_loop, args=(server.url, path, image, phase.offered_per_s / clients,
                                                             seconds, start_at, results)) for _ in range(clients)]
    poller = context.Process(target=_poll, args=(server.url, seconds, start_at, results))
    for process in (*senders, poller):
        process.start()
    collected = []
    while len(collected) < clients + 1:
        phase.rss_mib.append(rss_mib(server.process.pid))
        while not results.empty():
            collected.append(results.get())
        if len(collected) < clients + 1 and not any(p.is_alive() for p in (*senders, poller)):
            try:  # every process ended: what they sent is in the queue, or one of them failed
                while len(collected) < clients + 1:
                    collected.append(results.get(timeout=5))
            except queue.Empty:
                raise RuntimeError("a load or polling process ended without results (its traceback is above)") from None
        await asyncio.sleep(1.0)
    for process in (*senders, poller):
        process.join()
    for record in collected:
        if "sent" not in record:
            phase.health_ms, phase.metrics_ms = record["/v2/health/ready"], record["/metrics"]
            continue
        phase.sent += record["sent"]
        phase.statuses.update(record["statuses"])
        phase.errors.update(record["errors"])
        phase.ok_ms += record["ok"]
        phase.rejected_ms += record["rejected"]
        phase.timeout_ms += record["timeout"]
        phase.retry_after.update(record["retry_after"])
        phase.achieved_per_s += record["sent"] / record["send_seconds"]
        phase.lag_ms += record["lag"]


def summary(phase: Phase) -> dict[str, object]:
    def pct(values: list[float]) -> dict[str, float | None]:
        return {f"p{q}": (round(v, 1) if (v := percentile(values, q)) is not None else None) for q in (50, 90, 99)}

    return {
        "endpoint": phase.endpoint, "offered_per_s": round(phase.offered_per_s, 1),
        "achieved_send_per_s": round(phase.achieved_per_s, 1), "sent": phase.sent,
        "statuses": {str(k): v for k, v in sorted(phase.statuses.items())}, "errors": dict(phase.errors),
        "ok_ms": pct(phase.ok_ms), "rejected_503_ms": pct(phase.rejected_ms), "timeout_504_ms": pct(phase.timeout_ms),
        "max_ok_ms": round(max(phase.ok_ms), 1) if phase.ok_ms else None,
        "send_lag_ms": pct(phase.lag_ms),
        "retry_after": dict(phase.retry_after), "health_ms": pct(phase.health_ms), "metrics_ms": pct(phase.metrics_ms),
        "rss_mib": {"start": round(phase.rss_mib[0]), "peak": round(max(phase.rss_mib)),
                    "end": round(phase.rss_mib[-1])} if phase.rss_mib else None,
    }


def repository() -> dict:
    models = []
    for name, _, _ in ENDPOINTS.values():
        artifact = DEMO / f"{name}.onnx"
        if not artifact.exists():
            raise SystemExit(f"{artifact} is missing: run `.venv/bin/paca demo ensure` first")
        models.append({"name": name, "artifact": str(artifact), "max_batch_size": 8 if "classifier" in name else 4,
                       "batching": {"max_queue_delay_ms": 2, "max_queue_size": 64, "queue_timeout_ms": 10000},
                       "warmup": {"image_sizes": [[128, 128]]}, "options": {"intra_op_threads": 1}})
    return {"models": models}


async def run(args: argparse.Namespace) -> list[dict[str, object]]:
    results = []
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), repository()) as server:
        for endpoint in args.endpoints:
            model, verb, image_name = ENDPOINTS[endpoint]
            image = (REPO_ROOT / "loadtest" / "images" / image_name).read_bytes()
            path = f"/v1/models/{model}/{verb}"
            measured = await capacity(server.url, path, image, args.capacity_seconds, args.capacity_concurrency)
            phase = Phase(endpoint, measured * args.factor)
            print(f"{endpoint}: capacity {measured:.1f} req/s; offering {phase.offered_per_s:.1f} req/s for "
                  f"{args.seconds:g} s", flush=True)
            await open_loop(server, phase, path, image, args.seconds, args.clients)
            row = summary(phase)
            row["capacity_per_s"] = round(measured, 1)
            ready = httpx.get(f"{server.url}/v2/health/ready", timeout=10)
            row["ready_after"] = ready.status_code == 200
            results.append(row)
            print(json.dumps(row), flush=True)
            await asyncio.sleep(2)
    return results


def main(argv: list[str] | None = None) -> int:
    exit_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", nargs="+", default=["classify", "detect"], choices=sorted(ENDPOINTS))
    parser.add_argument("--factor", type=float, default=4.0, help="offered load as a multiple of capacity")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the open-loop phase")
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--capacity-concurrency", type=int, default=8)
    parser.add_argument("--clients", type=int, default=2, help="load-generating processes")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["ready_after"] and not r["errors"] and "500" not in r["statuses"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
