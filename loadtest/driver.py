"""The load generators: a closed loop (N clients, each sends when its last answer came) and an open loop.

The open loop is the honest one for "can it take R requests/s": arrivals follow a schedule (Poisson by
default, or evenly spaced) and are sent when due whether or not earlier requests were answered, so a slow
server builds a queue instead of slowing the client down (the "coordinated omission" of closed loops).
Outstanding requests are capped (`max_in_flight`); an arrival over the cap is recorded as `client-dropped`,
a failure. Every sample records when it was sent, how long it took, its status (the HTTP status code, the
gRPC status name, or `timeout` / the transport error's aiohttp class name, e.g. `ClientConnectorError` for a
refused connection) and, in the open loop, how late the client sent it. HTTP goes through aiohttp
(loadtest.http_load), whose per-request cost is a small fraction of httpx's.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from loadtest import http_load
from loadtest.workload import GrpcRequest, HttpRequest

Send = Callable[[object], Awaitable[tuple[str, bool]]]


@dataclass(frozen=True)
class Sample:
    sent_s: float  # since the step started
    latency_s: float
    status: str
    ok: bool
    lag_s: float = 0.0  # open loop: sent − scheduled


# --- senders ------------------------------------------------------------------------------------------------


def http_sender(session: aiohttp.ClientSession, endpoint: str) -> Send:
    """POSTs over `session` (made by http_load.load_session with the server's URL as base)."""

    async def send(request: HttpRequest) -> tuple[str, bool]:
        try:
            async with session.post(http_load.path(request.path), data=request.content,
                                    headers=request.headers) as response:
                body = await response.read()  # inside the context: the connection goes back to the pool after
        except http_load.TRANSPORT_ERRORS as exc:
            return http_load.failure_status(exc), False
        if response.status != 200:
            return str(response.status), False
        return "200", _valid_answer(endpoint, response.headers, body)

    return send


def _valid_answer(endpoint: str, headers: Mapping[str, str], body: bytes) -> bool:
    """A 200 with the wrong content is a failure too: check the shape of every answer, cheaply.
    `headers` must look names up case-insensitively (aiohttp's do)."""
    try:
        if endpoint == "v2":
            header_length = int(headers.get("Inference-Header-Content-Length", len(body)))
            outputs = json.loads(body[:header_length])["outputs"]
            return bool(outputs) and outputs[0]["parameters"]["binary_data_size"] > 0
        results = json.loads(body)["results"]
        return isinstance(results, list) and len(results) == 1
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def grpc_sender(stub, timeout_s: float) -> Send:
    import grpc

    async def send(request: GrpcRequest) -> tuple[str, bool]:
        try:
            response = await stub.ModelInfer(request.message, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, False
        return "OK", len(response.raw_output_contents) > 0 and len(response.raw_output_contents[0]) > 0

    return send


# --- loops --------------------------------------------------------------------------------------------------


async def closed_loop(send: Send, requests: Sequence[object], concurrency: int, duration_s: float) -> list[Sample]:
    """`concurrency` clients, each sending its next request as soon as its previous one was answered."""
    samples: list[Sample] = []
    started = time.perf_counter()
    deadline = started + duration_s

    async def client(index: int) -> None:
        turn = index
        while time.perf_counter() < deadline:
            request = requests[turn % len(requests)]
            turn += concurrency
            sent = time.perf_counter()
            status, ok = await send(request)
            samples.append(Sample(sent - started, time.perf_counter() - sent, status, ok))

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return samples


def arrival_times(rate: float, duration_s: float, arrivals: str, seed: int) -> list[float]:
    """Scheduled send times in [0, duration): a Poisson process of `rate`/s, or evenly spaced."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    if arrivals == "uniform":
        return [n / rate for n in range(int(duration_s * rate - 1e-9) + 1) if n / rate < duration_s]
    if arrivals != "poisson":
        raise ValueError(f"arrivals must be poisson or uniform, got {arrivals!r}")
    rng = random.Random(seed)
    times, now = [], 0.0
    while True:
        now += rng.expovariate(rate)
        if now >= duration_s:
            return times
        times.append(now)


async def open_loop(send: Send, requests: Sequence[object], schedule: Sequence[float],
                    max_in_flight: int) -> list[Sample]:
    """Send request n at schedule[n], without waiting for answers; then wait for the outstanding ones."""
    samples: list[Sample] = []
    in_flight: set[asyncio.Task] = set()
    started = time.perf_counter()

    async def one(request: object, scheduled_s: float) -> None:
        sent = time.perf_counter()
        status, ok = await send(request)
        samples.append(Sample(sent - started, time.perf_counter() - sent, status, ok, sent - started - scheduled_s))

    for index, scheduled_s in enumerate(schedule):
        delay = started + scheduled_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_in_flight:
            lag_s = time.perf_counter() - started - scheduled_s
            samples.append(Sample(scheduled_s, 0.0, "client-dropped", False, lag_s))
            continue
        task = asyncio.create_task(one(requests[index % len(requests)], scheduled_s))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(set(in_flight))
    return samples
