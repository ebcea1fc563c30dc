"""Service-level objectives for `paca loadtest --slo`: parse `p99<=200ms@50rps`, check it against the steps.

Grammar: METRIC OP VALUE [@ LOAD]
  METRIC  p50 | p90 | p95 | p99 | mean | max   (client latency of successful requests; VALUE in ms or s)
          errors                               (failed requests, % of those sent; VALUE in %)
          throughput                           (successful responses per second; VALUE in rps)
  OP      <= | < | >= | >
  LOAD    50rps (the rate-sweep step at 50 requests/s) or 16conc (the concurrency step at 16);
          without it the objective must hold at every step.
A LOAD the sweep does not contain is a configuration error, never a silent pass.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

LATENCY_METRICS = ("p50", "p90", "p95", "p99", "mean", "max")
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt,
}
_PATTERN = re.compile(
    r"^\s*(?P<metric>[a-z0-9]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>[0-9]*\.?[0-9]+)\s*(?P<unit>[a-z%/]*)\s*"
    r"(?:@\s*(?P<load>[0-9]*\.?[0-9]+)\s*(?P<load_unit>rps|conc))?\s*$"
)
_UNITS = {  # metric kind -> {unit: factor to the stored unit}; "" = the default unit
    "latency": {"ms": 1.0, "": 1.0, "s": 1000.0},
    "errors": {"%": 1.0, "": 1.0},
    "throughput": {"rps": 1.0, "": 1.0, "/s": 1.0},
}


class SLOError(ValueError):
    """An objective that cannot be parsed or applied to this sweep."""


@dataclass(frozen=True)
class SLO:
    text: str
    metric: str  # p50 … max, errors, throughput
    op: str
    threshold: float  # ms for latency, % for errors, rps for throughput
    load: float | None = None
    load_mode: str | None = None  # "rate" or "concurrency"

    @property
    def unit(self) -> str:
        return {"errors": "%", "throughput": "rps"}.get(self.metric, "ms")


@dataclass(frozen=True)
class SLOResult:
    slo: SLO
    step: str  # the step's label, e.g. "50 rps"
    measured: float
    passed: bool


def parse_slo(text: str) -> SLO:
    match = _PATTERN.match(text.lower())
    if not match:
        raise SLOError(f"cannot parse SLO {text!r}; expected e.g. 'p99<=200ms@50rps', 'errors<1%', "
                       f"'throughput>=40rps@16conc'")
    metric = match["metric"]
    kind = "latency" if metric in LATENCY_METRICS else metric
    if metric not in (*LATENCY_METRICS, "errors", "throughput"):
        raise SLOError(f"unknown SLO metric {metric!r} in {text!r}; use {', '.join(LATENCY_METRICS)}, errors or "
                       f"throughput")
    unit = match["unit"]
    if unit not in _UNITS[kind]:
        units = ", ".join(u for u in _UNITS[kind] if u)
        raise SLOError(f"unit {unit!r} does not fit {metric} in {text!r}; use {units}")
    load_mode = {"rps": "rate", "conc": "concurrency"}.get(match["load_unit"] or "")
    return SLO(text=text.strip(), metric=metric, op=match["op"], threshold=float(match["value"]) * _UNITS[kind][unit],
               load=float(match["load"]) if match["load"] else None, load_mode=load_mode)


def measured_value(slo: SLO, step: dict) -> float:
    if slo.metric in LATENCY_METRICS:
        return float(step["latency_ms"][slo.metric])
    if slo.metric == "errors":
        return 100.0 * step["error_rate"]
    return float(step["throughput_rps"])


def evaluate(slos: Sequence[SLO], steps: Sequence[dict]) -> list[SLOResult]:
    """One result per (objective, step it applies to). Steps are the report's dicts (see loadtest.report)."""
    results = []
    for slo in slos:
        if slo.load is None:
            targets = list(steps)
        else:
            targets = [s for s in steps if s["mode"] == slo.load_mode and abs(s["level"] - slo.load) < 1e-9]
            if not targets:
                levels = ", ".join(s["label"] for s in steps)
                raise SLOError(f"SLO {slo.text!r} names a step this sweep does not run (steps: {levels})")
        for step in targets:
            value = measured_value(slo, step)
            # A step without one successful answer has no latency: that misses every latency objective.
            passed = value == value and OPERATORS[slo.op](value, slo.threshold)  # NaN → False
            results.append(SLOResult(slo, step["label"], value, passed))
    return results


def check_against_sweep(slos: Sequence[SLO], mode: str, levels: Sequence[float]) -> None:
    """Fail before the run, not after it, when an objective names a step the sweep will not run."""
    for slo in slos:
        if slo.load is None:
            continue
        if slo.load_mode != mode or not any(abs(level - slo.load) < 1e-9 for level in levels):
            unit = "rps" if mode == "rate" else "conc"
            raise SLOError(f"SLO {slo.text!r} names a step this sweep does not run (the sweep runs "
                           f"{', '.join(f'{level:g}{unit}' for level in levels)})")
