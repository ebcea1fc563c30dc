"""Prometheus metrics: Triton's nv_* names (so Triton dashboards and HPA rules apply) plus histograms.

The nv_* families are rendered from each model's `ModelStats` (the same numbers /stats reports), written
by hand because prometheus-client would append `_total` to counter names and break Triton compatibility.
Latency and batch-size histograms come from prometheus-client, with the standard process_* metrics (CPU seconds,
resident memory, open file descriptors) of the serving process. The `*_created` timestamp series that
prometheus-client adds to every counter and histogram are switched off: no dashboard or rule reads them and they
double the series count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from service.stats import FAILURE_REASONS, ModelStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # process-wide switch in prometheus-client; read at every scrape
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, …
        self.request_latency = Histogram(
            "paca_request_duration_seconds",
            "End-to-end request latency (receive → response), by model, API and status.",
            ["model", "api", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "paca_batch_size",
            "Samples per backend execution (the batch the dynamic batcher formed).",
            ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128),
            registry=self.registry,
        )
        self._latency_children: dict[tuple[str, str, str], Histogram] = {}
        self._phase_children: dict[tuple[str, str, str], Histogram] = {}
        self.phase_latency = Histogram(
            "paca_request_phase_seconds",
            "Time a request spent in each phase of the request line (decode, preprocess, queue, inference, "
            "postprocess, encode), by model and API — the split the Server-Timing header shows.",
            ["model", "api", "phase"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_latency = Histogram(
            "paca_queue_duration_seconds",
            "Time requests waited in the batcher queue.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def track_inflight(self, requests: Callable[[], float], memory_bytes: Callable[[], float]) -> None:
        """Gauges read at scrape time: HTTP inference requests in progress (the `max_inflight_requests` limit)
        and the estimated memory they hold (the `max_inflight_memory_mb` budget)."""
        Gauge("paca_inflight_requests", "HTTP inference requests in progress (the 503 limit is "
              "PACA_MAX_INFLIGHT_REQUESTS).", registry=self.registry).set_function(requests)
        Gauge("paca_inflight_memory_bytes", "Estimated working memory of the requests in progress (the 503 "
              "budget is PACA_MAX_INFLIGHT_MEMORY_MB).", registry=self.registry).set_function(memory_bytes)

    def observe_request(self, model: str, api: str, status: str, seconds: float, phases: dict[str, float]) -> None:
        """Record one inference request: its latency and the time of each phase of the request line.

        The labelled children are looked up once per label set and kept (prometheus-client's `labels()`
        takes a lock and builds a key on every call)."""
        key = (model, api, status)
        child = self._latency_children.get(key)
        if child is None:
            child = self._latency_children[key] = self.request_latency.labels(model=model, api=api, status=status)
        child.observe(seconds)
        for phase, phase_seconds in phases.items():
            phase_key = (model, api, phase)
            phase_child = self._phase_children.get(phase_key)
            if phase_child is None:
                phase_child = self._phase_children[phase_key] = self.phase_latency.labels(model=model, api=api,
                                                                                          phase=phase)
            phase_child.observe(phase_seconds)

    def render(self, stats: Iterable[ModelStats]) -> bytes:
        return render_triton(list(stats)).encode() + generate_latest(self.registry)


def render_triton(stats: list[ModelStats]) -> str:
    """The nv_inference_* families in the Prometheus text format, one sample per model/version."""
    families: list[tuple[str, str, str, list[tuple[dict[str, str], float]]]] = []

    def family(name: str, kind: str, help_text: str, values: list[tuple[dict[str, str], float]]) -> None:
        families.append((name, kind, help_text, values))

    def per_model(getter) -> list[tuple[dict[str, str], float]]:
        return [({"model": s.name, "version": s.version}, getter(s)) for s in stats]

    family("nv_inference_request_success", "counter", "Number of successful inference requests, all batch sizes",
           per_model(lambda s: s.success.count))
    family("nv_inference_request_failure", "counter", "Number of failed inference requests, all batch sizes",
           [({"model": s.name, "version": s.version, "reason": r}, s.failures[r]) for s in stats
            for r in FAILURE_REASONS])
    family("nv_inference_count", "counter", "Number of inferences performed (a batch of n counts n)",
           per_model(lambda s: s.inference_count))
    family("nv_inference_exec_count", "counter", "Number of model executions performed",
           per_model(lambda s: s.execution_count))
    family("nv_inference_pending_request_count", "gauge", "Instantaneous number of pending requests awaiting "
           "execution per-model.", per_model(lambda s: s.pending))
    family("nv_inference_request_duration_us", "counter", "Cumulative inference request duration in microseconds",
           per_model(lambda s: (s.success.ns + s.fail.ns) // 1000))
    family("nv_inference_queue_duration_us", "counter", "Cumulative inference queuing duration in microseconds",
           per_model(lambda s: s.queue.ns // 1000))
    family("nv_inference_compute_input_duration_us", "counter", "Cumulative compute input duration in microseconds",
           per_model(lambda s: s.compute_input.ns // 1000))
    family("nv_inference_compute_infer_duration_us", "counter", "Cumulative compute inference duration in "
           "microseconds", per_model(lambda s: s.compute_infer.ns // 1000))
    family("nv_inference_compute_output_duration_us", "counter", "Cumulative inference compute output duration in "
           "microseconds", per_model(lambda s: s.compute_output.ns // 1000))

    lines = []
    for name, kind, help_text, values in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in values:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{label_text}}} {value:g}" if isinstance(value, float) else
                         f"{name}{{{label_text}}} {value}")
    return "\n".join(lines) + "\n"
