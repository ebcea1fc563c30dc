"""The three PNGs of a load-test run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from loadtest.driver import Sample

PERCENTILE_STYLES = (("p50", "o-"), ("p90", "s-"), ("p95", "^-"), ("p99", "D-"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_vs_throughput(steps: Sequence[dict], path: Path, title: str) -> None:
    """Client latency percentiles against achieved throughput, one point per step, labelled with its load."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    throughput = [s["throughput_rps"] for s in steps]
    for key, style in PERCENTILE_STYLES:
        ax.plot(throughput, [s["latency_ms"][key] for s in steps], style, label=key, markersize=5)
    for step in steps:
        p99 = step["latency_ms"]["p99"]
        if not math.isnan(p99):
            ax.annotate(step["label"], (step["throughput_rps"], p99), textcoords="offset points", xytext=(4, 6),
                        fontsize=8)
    ax.set(xlabel="throughput (successful responses/s)", ylabel="client latency (ms)", title=title)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def batch_sizes(steps: Sequence[dict], path: Path, title: str) -> None:
    """Share of backend executions per batch size (from paca_batch_size), grouped bars per step."""
    plt = _pyplot()
    labels: list[str] = []
    for step in steps:
        for label in ((step.get("server") or {}).get("batch_size_distribution") or {}):
            if label not in labels:
                labels.append(label)
    labels.sort(key=lambda text: float(text.lstrip(">").split("-")[0]))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    width = 0.8 / max(len(steps), 1)
    for index, step in enumerate(steps):
        distribution = (step.get("server") or {}).get("batch_size_distribution") or {}
        total = sum(distribution.values())
        shares = [distribution.get(label, 0) / total if total else 0.0 for label in labels]
        mean = (step.get("server") or {}).get("mean_batch_size", float("nan"))
        positions = [n + (index - (len(steps) - 1) / 2) * width for n in range(len(labels))]
        ax.bar(positions, shares, width=width, label=f"{step['label']} (mean {mean:.2f})")
    ax.set_xticks(range(len(labels)), labels)
    ax.set(xlabel="batch size (samples per execution)", ylabel="share of executions", title=title)
    ax.grid(True, axis="y", alpha=0.3)
    if steps and labels:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "the server reported no executions", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency_over_time(steps: Sequence[dict], samples: Sequence[Sequence[Sample]], path: Path, title: str) -> None:
    """Every request's latency at the time it was sent, steps side by side; failures as black crosses."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for step, step_samples in zip(steps, samples, strict=True):
        offset = step["started_s"]
        ok = [s for s in step_samples if s.ok]
        failed = [s for s in step_samples if not s.ok]
        ax.scatter([offset + s.sent_s for s in ok], [s.latency_s * 1000 for s in ok], s=4, alpha=0.5)
        if failed:
            ax.scatter([offset + s.sent_s for s in failed], [s.latency_s * 1000 for s in failed], s=12, marker="x",
                       color="black")
        ax.axvline(offset, color="grey", linewidth=0.6, linestyle=":")
        ax.text(offset, 1.0, f" {step['label']}", transform=ax.get_xaxis_transform(), fontsize=8, va="top")
    ax.set(xlabel="time since the run started (s)", ylabel="latency (ms)", title=title)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if any(not s.ok for step_samples in samples for s in step_samples):
        ax.scatter([], [], s=12, marker="x", color="black", label="failed")
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
