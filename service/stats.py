"""Per-model counters in Triton's statistics shape; /v2/.../stats and the nv_* metrics both read them.

One source of truth: the batcher records here, the API renders. Durations are nanoseconds.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    """Cumulative since start. `inference_count` counts samples, `execution_count` backend runs."""

    name: str
    version: str = "1"
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0))
    batch_stats: dict[int, BatchStats] = field(default_factory=lambda: defaultdict(BatchStats))
    inference_count: int = 0
    execution_count: int = 0
    pending: int = 0
    last_inference_ms: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_execution(
        self, batch_size: int, requests: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One backend run of `batch_size` samples serving `requests` requests."""
        with self._lock:
            self.inference_count += batch_size
            self.execution_count += 1
            self.last_inference_ms = int(time.time() * 1000)
            # Per request, as Triton does: each request in the batch "spent" the batch's compute time.
            self.compute_input.add(input_ns * requests, requests)
            self.compute_infer.add(infer_ns * requests, requests)
            self.compute_output.add(output_ns * requests, requests)
            entry = self.batch_stats[batch_size]
            entry.compute_input.add(input_ns)
            entry.compute_infer.add(infer_ns)
            entry.compute_output.add(output_ns)

    def record_queue(self, ns: int) -> None:
        with self._lock:
            self.queue.add(ns)

    def record_success(self, ns: int) -> None:
        with self._lock:
            self.success.add(ns)

    def record_failure(self, ns: int, reason: str) -> None:
        with self._lock:
            self.fail.add(ns)
            self.failures[reason if reason in self.failures else "OTHER"] += 1

    def as_triton_dict(self) -> dict[str, object]:
        with self._lock:
            return {
                "name": self.name,
                "version": self.version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    "success": self.success.as_dict(),
                    "fail": self.fail.as_dict(),
                    "queue": self.queue.as_dict(),
                    "compute_input": self.compute_input.as_dict(),
                    "compute_infer": self.compute_infer.as_dict(),
                    "compute_output": self.compute_output.as_dict(),
                    "cache_hit": {"count": 0, "ns": 0},
                    "cache_miss": {"count": 0, "ns": 0},
                },
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": entry.compute_input.as_dict(),
                        "compute_infer": entry.compute_infer.as_dict(),
                        "compute_output": entry.compute_output.as_dict(),
                    }
                    for size, entry in sorted(self.batch_stats.items())
                ],
            }
