"""Where a request's time went: the phases of the request line, for `Server-Timing`, metrics and traces.

Each phase is recorded as intervals of wall-clock time (`time.time_ns`), where it happened (a pool thread,
a batcher instance). For `Server-Timing` and the histograms, decode, preprocess, postprocess and encode
add up over a request's images (CPU time spent on them); queue and inference are the longest of its
batcher requests (they overlap). `total` is the whole request in the server, so `total` minus the phases
is the serving overhead (HTTP, parsing, hand-offs). Traces show every interval as a span.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import Any

PHASES = ("decode", "preprocess", "queue", "inference", "postprocess", "encode")
OVERLAPPING = frozenset({"queue", "inference"})

request_timings: contextvars.ContextVar[RequestTimings | None] = contextvars.ContextVar("request_timings",
                                                                                        default=None)

Interval = tuple[str, int, int]  # phase, start and end in time.time_ns()


@dataclass
class RequestTimings:
    started: float = field(default_factory=time.perf_counter)
    phases: dict[str, float] = field(default_factory=dict)  # seconds, as Server-Timing reports them
    intervals: list[Interval] = field(default_factory=list)
    trace: Any = None  # the request span's SpanContext when tracing is on: batch spans link to it

    def record(self, phase: str, start_ns: int, end_ns: int) -> None:
        seconds = (end_ns - start_ns) / 1e9
        self.intervals.append((phase, start_ns, end_ns))
        if phase in OVERLAPPING:
            self.phases[phase] = max(self.phases.get(phase, 0.0), seconds)
        else:
            self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    def total(self) -> float:
        return time.perf_counter() - self.started

    def header(self) -> str:
        """`Server-Timing` value, durations in milliseconds."""
        parts = [f"{phase};dur={self.phases[phase] * 1000:.2f}" for phase in PHASES if phase in self.phases]
        parts.append(f"total;dur={self.total() * 1000:.2f}")
        return ", ".join(parts)


def current() -> RequestTimings | None:
    return request_timings.get()


def record_all(timings: RequestTimings | None, intervals: list[Interval]) -> None:
    """Record intervals measured elsewhere (a pool thread) into the request's timings, if it has any."""
    if timings is not None:
        for phase, start_ns, end_ns in intervals:
            timings.record(phase, start_ns, end_ns)
