"""The server's side of a load-test step, from two scrapes of `/metrics` (before and after) for one model.

Counters and histograms are cumulative, so the step's share is after − before:
- nv_inference_request_success / _failure, nv_inference_count / _exec_count → requests, failures by reason,
  samples per execution (the dynamic batcher's average batch);
- nv_inference_queue_duration_us, nv_inference_compute_{input,infer,output}_duration_us → mean queue and
  compute time per request (Triton's accounting: every request in a batch is charged the batch's compute);
- paca_batch_size → the batch-size distribution; paca_queue_duration_seconds and
  paca_request_duration_seconds (for the API under test) → quantile estimates from the buckets, as PromQL's
  histogram_quantile() computes them.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable

Samples = dict[str, list[tuple[dict[str, str], float]]]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

COMPUTE_FAMILIES = ("nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
                    "nv_inference_compute_output_duration_us")


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text exposition by its name exactly as exposed (as Prometheus stores it),
    with its labels. Not prometheus-client's parser: that one renames counter samples to `<name>_total`, and
    the Triton-compatible counters have no such suffix."""
    samples: Samples = defaultdict(list)
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ValueError(f"not a Prometheus sample line: {line[:200]!r}")
        name, label_text, raw_value = match.groups()
        labels = {key: re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], value)
                  for key, value in _LABEL.findall(label_text or "")}
        samples[name].append((labels, float(raw_value)))
    return dict(samples)


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    return sum(v for sample_labels, v in samples.get(name, []) if labels.items() <= sample_labels.items())


def buckets(samples: Samples, name: str, **labels: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of a histogram, summed over the other labels, sorted by bound."""
    totals: dict[float, float] = defaultdict(float)
    for sample_labels, v in samples.get(f"{name}_bucket", []):
        if labels.items() <= sample_labels.items():
            totals[float(sample_labels["le"])] += v
    return sorted(totals.items())


def bucket_delta(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> list[tuple[float, float]]:
    old = dict(before)
    return [(bound, count - old.get(bound, 0.0)) for bound, count in after]


def histogram_quantile(q: float, cumulative: list[tuple[float, float]]) -> float:
    """PromQL's estimate: linear interpolation inside the bucket that holds the q-quantile (NaN when empty)."""
    if not cumulative or cumulative[-1][1] <= 0:
        return float("nan")
    total = cumulative[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):  # in the +Inf bucket: the highest finite bound is all one can say
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def batch_distribution(cumulative: list[tuple[float, float]]) -> dict[str, int]:
    """Executions per batch-size bucket: '1', '2', '5-6', …; '>128' for the +Inf bucket."""
    distribution: dict[str, int] = {}
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in cumulative:
        executions = round(count - previous_count)
        if math.isinf(bound):
            label = f">{previous_bound:g}"
        else:
            low, high = int(previous_bound) + 1, int(bound)
            label = str(high) if low == high else f"{low}-{high}"
        if executions:
            distribution[label] = executions
        previous_bound, previous_count = bound, count
    return distribution


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def step_server_figures(before: Samples, after: Samples, model: str, api: str | None) -> dict[str, object]:
    """The server's view of one step for `model` (and `api`, e.g. 'v1/classify', for the request histogram)."""

    def delta(name: str, **labels: str) -> float:
        return value(after, name, model=model, **labels) - value(before, name, model=model, **labels)

    success = delta("nv_inference_request_success")
    failures = {}
    for labels, _ in after.get("nv_inference_request_failure", []):
        if labels.get("model") == model:
            count = delta("nv_inference_request_failure", reason=labels["reason"])
            if count:
                failures[labels["reason"]] = int(count)
    executions = delta("nv_inference_exec_count")
    inferences = delta("nv_inference_count")
    requests_run = success + failures.get("BACKEND", 0)
    queue_us = delta("nv_inference_queue_duration_us")
    compute_us = sum(delta(name) for name in COMPUTE_FAMILIES)
    batch = bucket_delta(buckets(before, "paca_batch_size", model=model),
                         buckets(after, "paca_batch_size", model=model))
    queue = bucket_delta(buckets(before, "paca_queue_duration_seconds", model=model),
                         buckets(after, "paca_queue_duration_seconds", model=model))
    figures: dict[str, object] = {
        "requests_ok": int(success),
        "failures_by_reason": failures,
        "executions": int(executions),
        "inferences": int(inferences),
        "mean_batch_size": _ratio(inferences, executions),
        "batch_size_distribution": batch_distribution(batch),
        "queue_ms_mean": _ratio(queue_us, requests_run) / 1000,
        "queue_ms_p50": histogram_quantile(0.5, queue) * 1000,
        "queue_ms_p99": histogram_quantile(0.99, queue) * 1000,
        "compute_ms_mean": _ratio(compute_us, requests_run) / 1000,
    }
    if api is not None:
        request = bucket_delta(buckets(before, "paca_request_duration_seconds", model=model, api=api),
                               buckets(after, "paca_request_duration_seconds", model=model, api=api))
        count = request[-1][1] if request else 0.0
        total_s = (value(after, "paca_request_duration_seconds_sum", model=model, api=api)
                   - value(before, "paca_request_duration_seconds_sum", model=model, api=api))
        figures |= {
            "server_request_ms_mean": _ratio(total_s, count) * 1000,
            "server_request_ms_p99": histogram_quantile(0.99, request) * 1000,
        }
    return figures


def pending(samples: Samples, model: str) -> float:
    """Requests waiting in the model's queue right now (the queue-depth gauge)."""
    return value(samples, "nv_inference_pending_request_count", model=model)


def summarise_pending(readings: Iterable[float]) -> dict[str, float]:
    values = list(readings)
    if not values:
        return {"pending_max": float("nan"), "pending_mean": float("nan")}
    return {"pending_max": max(values), "pending_mean": sum(values) / len(values)}
