"""One `paca loadtest` run: warm up, then per step scrape /metrics, load, scrape again; write every output.

Steps run one after the other against the same server; the client's figures come from its samples
(loadtest.report), the server's from the difference of the two scrapes (loadtest.server_metrics), and the
queue depth from polling the pending-request gauge while the step runs. All HTTP here goes through aiohttp
(loadtest.http_load): the load with a pool sized per step, the scrapes with a small session of their own, so a
scrape never waits behind the load for a pooled connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from loadtest import http_load, plots, report
from loadtest.driver import Sample, Send, arrival_times, closed_loop, grpc_sender, http_sender, open_loop
from loadtest.server_metrics import parse_metrics, pending, step_server_figures, summarise_pending
from loadtest.slo import SLO, SLOResult, evaluate
from loadtest.workload import Workload

API_LABEL = {"v2": "v2/infer", "grpc": "grpc/infer"}  # REST: v1/<endpoint>, as the server labels it
LAG_NOTE_MS = 50.0
CLIENT_CPU_NOTE = 0.85
OUTPUT_FILES = ("loadtest.json", "steps.csv", "requests.csv", "summary.md", "latency_vs_throughput.png",
                "batch_sizes.png", "latency_over_time.png")


@dataclass(frozen=True)
class SweepSettings:
    url: str
    mode: str  # "concurrency" or "rate"
    levels: tuple[float, ...]
    duration_s: float
    warmup_s: float = 1.0
    timeout_s: float = 30.0
    max_in_flight: int = 512
    arrivals: str = "poisson"
    seed: int = 0
    grpc_target: str | None = None
    metrics_interval_s: float = 0.5


@dataclass
class StepOutcome:
    figures: dict
    samples: list[Sample]


class Generator:
    """Load for the workload's endpoint: one gRPC channel for the run, HTTP connections sized per step."""

    def __init__(self, settings: SweepSettings, workload: Workload) -> None:
        self.settings, self.workload = settings, workload
        self.channel = None

    async def __aenter__(self) -> Generator:
        if self.workload.endpoint == "grpc":
            import grpc

            from service.grpc_gen import grpc_service_pb2_grpc as pb_grpc

            limit = 64 * 1024 * 1024
            self.channel = grpc.aio.insecure_channel(self.settings.grpc_target, options=[
                ("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)])
            self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.channel is not None:
            await self.channel.close()

    @contextlib.asynccontextmanager
    async def sender(self, mode: str, level: float) -> AsyncIterator[Send]:
        """A send function with connections for the step's load; warm-up and step share them."""
        if self.workload.endpoint == "grpc":
            yield grpc_sender(self.stub, self.settings.timeout_s)
            return
        connections = int(level) if mode == "concurrency" else self.settings.max_in_flight
        async with http_load.load_session(self.settings.url, connections, self.settings.timeout_s) as session:
            yield http_sender(session, self.workload.endpoint)

    async def run(self, send: Send, mode: str, level: float, duration_s: float, seed: int) -> list[Sample]:
        requests = self.workload.requests
        if mode == "concurrency":
            return await closed_loop(send, requests, int(level), duration_s)
        schedule = arrival_times(level, duration_s, self.settings.arrivals, seed)
        return await open_loop(send, requests, schedule, self.settings.max_in_flight)


SCRAPE_ERRORS = (*http_load.TRANSPORT_ERRORS, ValueError)  # no answer, an HTTP error status, or unparsable


async def _scrape(session: aiohttp.ClientSession):
    async with session.get(http_load.path("/metrics"), raise_for_status=True) as response:
        text = await response.text()
    return parse_metrics(text)


def _scrape_failure(exc: BaseException) -> str:
    return str(exc) or http_load.failure_status(exc)  # a timeout has no message


async def _poll_pending(session: aiohttp.ClientSession, model: str, interval_s: float, stop: asyncio.Event,
                        readings: list[float]) -> None:
    while not stop.is_set():
        with contextlib.suppress(*SCRAPE_ERRORS):
            readings.append(pending(await _scrape(session), model))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def run_sweep(settings: SweepSettings, workload: Workload) -> tuple[list[StepOutcome], list[str]]:
    outcomes: list[StepOutcome] = []
    notes: list[str] = []
    api = API_LABEL.get(workload.endpoint, f"v1/{workload.endpoint}")
    run_started = time.perf_counter()
    async with http_load.load_session(settings.url, 2, 10) as metrics_client, \
            Generator(settings, workload) as generator:
        for index, level in enumerate(settings.levels):
            async with generator.sender(settings.mode, level) as send:
                outcomes.append(await _step(settings, workload, generator, send, metrics_client, index, level,
                                            run_started, api, notes))
    return outcomes, notes


async def _step(settings: SweepSettings, workload: Workload, generator: Generator, send: Send,
                metrics_client: aiohttp.ClientSession, index: int, level: float, run_started: float, api: str,
                notes: list[str]) -> StepOutcome:
    if settings.warmup_s > 0:
        await generator.run(send, settings.mode, level, settings.warmup_s, settings.seed + 1000 + index)
    try:
        before = await _scrape(metrics_client)
    except SCRAPE_ERRORS as exc:
        before = None
        notes.append(f"{report.step_label(settings.mode, level)}: no server figures (/metrics: "
                     f"{_scrape_failure(exc)})")
    readings: list[float] = []
    stop = asyncio.Event()
    poller = asyncio.create_task(_poll_pending(metrics_client, workload.model, settings.metrics_interval_s, stop,
                                               readings))
    started_s = time.perf_counter() - run_started
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    samples = await generator.run(send, settings.mode, level, settings.duration_s, settings.seed + index)
    cpu_s, wall_s = time.process_time() - cpu_before, time.perf_counter() - wall_before
    stop.set()
    await poller
    figures = report.step_figures(samples, settings.mode, level, settings.duration_s)
    figures["started_s"] = started_s
    figures["client"]["cpu_fraction"] = cpu_s / wall_s if wall_s > 0 else float("nan")
    if before is not None:
        try:
            after = await _scrape(metrics_client)
            figures["server"] = step_server_figures(before, after, workload.model, api) | summarise_pending(readings)
        except SCRAPE_ERRORS as exc:
            notes.append(f"{figures['label']}: no server figures (/metrics: {_scrape_failure(exc)})")
    notes += _step_notes(figures)
    return StepOutcome(figures, samples)


def _step_notes(figures: dict) -> list[str]:
    notes = []
    lag = figures["client"].get("lag_ms_p99", 0.0)
    if figures["mode"] == "rate" and lag > LAG_NOTE_MS:
        notes.append(f"{figures['label']}: the client sent late (p99 {lag:.0f} ms behind schedule): the offered load "
                     f"was lower than asked; use more client processes (locust, perf_analyzer) for this rate")
    if figures["client"]["cpu_fraction"] > CLIENT_CPU_NOTE:
        notes.append(f"{figures['label']}: the client used {100 * figures['client']['cpu_fraction']:.0f}% of a CPU "
                     f"core and may itself be the bottleneck")
    if figures["mode"] == "rate" and figures["throughput_rps"] < 0.9 * figures["level"] and figures["sent"]:
        notes.append(f"{figures['label']}: throughput {figures['throughput_rps']:.1f}/s below the offered "
                     f"{figures['level']:g}/s: the server is past its capacity at this rate")
    return notes


def execute(settings: SweepSettings, workload: Workload, output: Path, slos: Sequence[SLO], *,
            image_source: str) -> tuple[dict, list[SLOResult]]:
    """Run the sweep and write every output file into `output`; returns the run and the SLO results."""
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    outcomes, notes = asyncio.run(run_sweep(settings, workload))
    steps = [o.figures for o in outcomes]
    samples = [o.samples for o in outcomes]
    slo_results = evaluate(slos, steps)
    run = {
        "settings": {
            "url": settings.url, "grpc_target": settings.grpc_target, "model": workload.model,
            "task": workload.task, "endpoint": workload.endpoint, "mode": settings.mode,
            "levels": list(settings.levels), "duration_s": settings.duration_s, "warmup_s": settings.warmup_s,
            "timeout_s": settings.timeout_s, "max_in_flight": settings.max_in_flight,
            "arrivals": settings.arrivals, "seed": settings.seed, "images": len(workload.requests),
            "image_source": image_source,
        },
        "started_at": started_at,
        "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "steps": steps,
        "slos": [{"slo": r.slo.text, "step": r.step, "measured": r.measured, "unit": r.slo.unit,
                  "passed": r.passed} for r in slo_results],
        "passed": all(r.passed for r in slo_results),
        "notes": notes,
    }
    output.mkdir(parents=True, exist_ok=True)
    report.write_json(output / "loadtest.json", run)
    report.write_steps_csv(output / "steps.csv", steps)
    report.write_requests_csv(output / "requests.csv", steps, samples)
    (output / "summary.md").write_text(report.summary_markdown(run, slo_results))
    title = f"{workload.model} · {workload.endpoint}"
    plots.latency_vs_throughput(steps, output / "latency_vs_throughput.png", title)
    plots.batch_sizes(steps, output / "batch_sizes.png", title)
    plots.latency_over_time(steps, samples, output / "latency_over_time.png", title)
    return run, slo_results
