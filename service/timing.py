"""Where a request's time went: the phases of the request line, for the `Server-Timing` header and metrics.

Decode, preprocess and postprocess add up over a request's images (CPU time spent on them); queue and
inference are the longest of its batcher requests (they overlap). `total` is the whole request in the
server, so `total` minus the phases is the serving overhead (HTTP, parsing, encoding, scheduling).
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field

PHASES = ("decode", "preprocess", "queue", "inference", "postprocess")

request_timings: contextvars.ContextVar[RequestTimings | None] = contextvars.ContextVar("request_timings",
                                                                                        default=None)


@dataclass
class RequestTimings:
    started: float = field(default_factory=time.perf_counter)
    phases: dict[str, float] = field(default_factory=dict)  # seconds

    def add(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    def longest(self, phase: str, seconds: float) -> None:
        self.phases[phase] = max(self.phases.get(phase, 0.0), seconds)

    def total(self) -> float:
        return time.perf_counter() - self.started

    def header(self) -> str:
        """`Server-Timing` value, durations in milliseconds."""
        parts = [f"{phase};dur={self.phases[phase] * 1000:.2f}" for phase in PHASES if phase in self.phases]
        parts.append(f"total;dur={self.total() * 1000:.2f}")
        return ", ".join(parts)


def current() -> RequestTimings | None:
    return request_timings.get()
