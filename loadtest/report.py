"""Figures of a load-test step from its samples, and the files a run writes: JSON, CSV and summary.md.

Client latency percentiles are over the successful requests (failures are counted by status instead, so a
fast 503 cannot make a step look quick). Throughput counts successful answers that arrived within the step's
duration, divided by it; `offered_rps` is what the client sent. Percentiles are numpy's linear interpolation.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loadtest.driver import Sample
from loadtest.slo import SLOResult

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}
STEP_COLUMNS = (
    "label", "mode", "level", "duration_s", "sent", "ok", "errors", "error_rate", "offered_rps", "throughput_rps",
    "latency_ms.mean", "latency_ms.p50", "latency_ms.p90", "latency_ms.p95", "latency_ms.p99", "latency_ms.max",
    "errors_by_status", "server.queue_ms_mean", "server.queue_ms_p99", "server.compute_ms_mean",
    "server.server_request_ms_mean", "server.mean_batch_size", "server.executions", "server.pending_max",
    "client.cpu_fraction", "client.lag_ms_p99",
)


def step_label(mode: str, level: float) -> str:
    return f"{level:g} rps" if mode == "rate" else f"c={level:g}"


def latency_figures(latencies_ms: Sequence[float]) -> dict[str, float]:
    if not latencies_ms:
        return {key: float("nan") for key in ("mean", *PERCENTILES, "max")}
    values = np.asarray(latencies_ms, dtype=float)
    figures = {"mean": float(values.mean())}
    figures |= {key: float(np.percentile(values, q)) for key, q in PERCENTILES.items()}
    figures["max"] = float(values.max())
    return figures


def step_figures(samples: Sequence[Sample], mode: str, level: float, duration_s: float) -> dict:
    ok = [s for s in samples if s.ok]
    in_window = sum(1 for s in ok if s.sent_s + s.latency_s <= duration_s)
    errors = Counter(s.status for s in samples if not s.ok)
    lags = [s.lag_s * 1000 for s in samples]
    return {
        "label": step_label(mode, level),
        "mode": mode,
        "level": level,
        "duration_s": duration_s,
        "sent": len(samples),
        "ok": len(ok),
        "errors": sum(errors.values()),
        "errors_by_status": dict(sorted(errors.items())),
        "error_rate": sum(errors.values()) / len(samples) if samples else 0.0,
        "offered_rps": len(samples) / duration_s,
        "throughput_rps": in_window / duration_s,
        "latency_ms": latency_figures([s.latency_s * 1000 for s in ok]),
        "client": {"lag_ms_p99": float(np.percentile(lags, 99)) if mode == "rate" and lags else 0.0},
    }


def _flat(step: dict, column: str) -> object:
    value: object = step
    for part in column.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, dict):
        return ";".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 4)
    return "" if value is None else value


def write_json(path: Path, run: dict) -> None:
    def clean(value: object) -> object:  # JSON has no NaN: write null
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(run), indent=2))


def write_steps_csv(path: Path, steps: Sequence[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(STEP_COLUMNS)
        for step in steps:
            writer.writerow([_flat(step, column) for column in STEP_COLUMNS])


def write_requests_csv(path: Path, steps: Sequence[dict], samples: Sequence[Sequence[Sample]]) -> None:
    """Every request: its step, when it was sent (s since the run started), latency, status."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("step", "sent_s", "latency_ms", "status", "ok", "lag_ms"))
        for step, step_samples in zip(steps, samples, strict=True):
            offset = step["started_s"]
            for s in sorted(step_samples, key=lambda s: s.sent_s):
                writer.writerow((step["label"], round(offset + s.sent_s, 4), round(s.latency_s * 1000, 3), s.status,
                                 int(s.ok), round(s.lag_s * 1000, 3)))


def _ms(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def summary_markdown(run: dict, slo_results: Sequence[SLOResult]) -> str:
    settings = run["settings"]
    lines = [
        f"# Load test: {settings['model']} via {settings['endpoint']}",
        "",
        f"- target: {settings['url']}"
        + (f" (gRPC {settings['grpc_target']})" if settings["endpoint"] == "grpc" else ""),
        f"- {'open loop, ' + settings['arrivals'] + ' arrivals' if settings['mode'] == 'rate' else 'closed loop'}; "
        f"{settings['duration_s']:g} s per step after {settings['warmup_s']:g} s warm-up; "
        f"{settings['images']} images ({settings['image_source']})",
        f"- started {run['started_at']}; client load average {run['load_average']}",
        "",
        "| step | sent | ok | errors | offered rps | throughput rps | p50 ms | p90 ms | p95 ms | p99 ms | "
        "server request ms | server queue ms | server compute ms | mean batch | queue depth max |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for step in run["steps"]:
        server = step.get("server") or {}
        errors = ", ".join(f"{k}: {v}" for k, v in step["errors_by_status"].items()) or "0"
        latency = step["latency_ms"]
        lines.append(
            f"| {step['label']} | {step['sent']} | {step['ok']} | {errors} | {step['offered_rps']:.1f} | "
            f"{step['throughput_rps']:.1f} | {_ms(latency['p50'])} | {_ms(latency['p90'])} | {_ms(latency['p95'])} | "
            f"{_ms(latency['p99'])} | {_ms(server.get('server_request_ms_mean'))} | "
            f"{_ms(server.get('queue_ms_mean'))} | {_ms(server.get('compute_ms_mean'))} | "
            f"{_ms(server.get('mean_batch_size'))} | {_ms(server.get('pending_max'))} |"
        )
    lines += ["", "Client latency is what a caller sees; server request/queue/compute are means per request from the "
                  "server's /metrics (request: from the HTTP middleware or gRPC handler on; queue: waiting in the "
                  "batcher; compute: the model run of its batch).", "",
              "Batch sizes the server formed (executions per batch size):", ""]
    for step in run["steps"]:
        distribution = (step.get("server") or {}).get("batch_size_distribution") or {}
        lines.append(f"- {step['label']}: " + (", ".join(f"{k}: {v}" for k, v in distribution.items()) or "none"))
    if slo_results:
        lines += ["", "## SLOs", ""]
        for result in slo_results:
            mark = "PASS" if result.passed else "FAIL"
            lines.append(f"- **{mark}** `{result.slo.text}` at {result.step}: measured "
                         f"{_ms(result.measured)} {result.slo.unit}")
    notes = run.get("notes") or []
    if notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    lines += ["", "![latency vs throughput](latency_vs_throughput.png)", "",
              "![batch sizes](batch_sizes.png)", "", "![latency over time](latency_over_time.png)", ""]
    return "\n".join(lines)
