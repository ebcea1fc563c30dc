"""`paca loadtest` against the real server: every output of a few seconds of sweeps, SLO gates and refusals.

Figures are checked for consistency with each other and with the server's own counters (a step's successful
requests on the client equal the server's nv_inference_request_success delta), never for speed.
"""

from __future__ import annotations

import csv
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from loadtest import driver, http_load, server_metrics, slo
from loadtest.sweep import OUTPUT_FILES
from service.cli import app
from tests.loadtest.conftest import CLASSIFIER
from tests.support.server import ServerProcess
from tests.support.stub_http import StubHandler, serving

TASK_ENDPOINT = {"classification": "classify", "detection": "detect", "segmentation": "segment"}


def paca(*args: str):
    return CliRunner().invoke(app, ["loadtest", *args])


def _read_run(folder: Path) -> dict:
    for name in OUTPUT_FILES:
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    for name in OUTPUT_FILES:
        if name.endswith(".png"):
            with Image.open(folder / name) as image:
                assert image.format == "PNG" and image.width >= 400 and image.height >= 300
    return json.loads((folder / "loadtest.json").read_text())


def _check_step(step: dict) -> None:
    assert step["sent"] > 0 and step["ok"] + step["errors"] == step["sent"]
    latency = step["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert 0 < step["throughput_rps"] <= step["offered_rps"] + 1e-9
    server = step["server"]
    # The server counted exactly the requests the client got answers for (warm-up excluded by the scrapes).
    assert server["requests_ok"] == step["ok"], (server, step["ok"])
    assert server["executions"] >= 1 and sum(server["batch_size_distribution"].values()) == server["executions"]
    assert 1 <= server["mean_batch_size"] <= 4  # max_batch_size of the test repository
    assert server["queue_ms_mean"] >= 0 and server["compute_ms_mean"] > 0
    assert server["server_request_ms_mean"] > 0
    assert server["pending_max"] >= 0


def test_closed_loop_sweep_writes_every_output_and_passes_its_slos(loadtest_server: ServerProcess,
                                                                   tmp_path: Path) -> None:
    result = paca("--url", loadtest_server.url, "--model", CLASSIFIER, "--concurrency", "1,3", "--duration", "2",
                  "--warmup", "0.5", "--output", str(tmp_path), "--slo", "p99<=60s", "--slo", "errors<=0%",
                  "--slo", "throughput>=0.5rps@3conc")
    assert result.exit_code == 0, result.output
    run = _read_run(tmp_path)
    assert run["settings"]["endpoint"] == "classify" and run["settings"]["mode"] == "concurrency"
    assert [s["label"] for s in run["steps"]] == ["c=1", "c=3"]
    for step in run["steps"]:
        _check_step(step)
        assert step["errors_by_status"] == {}
    assert run["passed"] and len(run["slos"]) == 2 + 2 + 1  # two step-wide objectives on 2 steps, one at c=3
    # More clients than the batcher's delay can separate: some batches hold more than one request.
    with (tmp_path / "steps.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["label"] for r in rows] == ["c=1", "c=3"]
    assert float(rows[1]["latency_ms.p99"]) == pytest.approx(run["steps"][1]["latency_ms"]["p99"], abs=1e-3)
    with (tmp_path / "requests.csv").open() as handle:
        requests = list(csv.DictReader(handle))
    assert len(requests) == sum(s["sent"] for s in run["steps"])
    assert {r["status"] for r in requests} == {"200"}
    summary = (tmp_path / "summary.md").read_text()
    assert "| c=1 |" in summary and "| c=3 |" in summary and summary.count("**PASS**") == 5
    assert "latency_vs_throughput.png" in summary
    assert "| c=3 |" in result.output  # the summary is printed too


def test_open_loop_rate_sweep_over_v2_binary_tensors_fails_a_missed_slo(loadtest_server: ServerProcess,
                                                                         tmp_path: Path) -> None:
    result = paca("--url", loadtest_server.url, "--model", CLASSIFIER, "--endpoint", "v2", "--rate", "4,8",
                  "--arrivals", "uniform", "--duration", "2", "--warmup", "0", "--output", str(tmp_path),
                  "--slo", "p99<=0.001ms@8rps", "--slo", "errors<=0%")
    assert result.exit_code == 1, result.output
    assert "SLO missed: p99<=0.001ms@8rps at 8 rps" in result.output
    run = _read_run(tmp_path)
    assert run["settings"]["endpoint"] == "v2" and not run["passed"]
    for step, rate in zip(run["steps"], (4, 8), strict=True):
        _check_step(step)
        # Uniform arrivals: exactly rate × duration requests were offered, whatever the answers took.
        assert step["sent"] == rate * 2 and step["offered_rps"] == rate
    outcomes = {(r["slo"], r["step"]): r["passed"] for r in run["slos"]}
    assert outcomes == {("p99<=0.001ms@8rps", "8 rps"): False, ("errors<=0%", "4 rps"): True,
                        ("errors<=0%", "8 rps"): True}
    assert "**FAIL** `p99<=0.001ms@8rps` at 8 rps" in (tmp_path / "summary.md").read_text()


def test_grpc_endpoint_sends_raw_tensors(loadtest_server: ServerProcess, tmp_path: Path) -> None:
    result = paca("--url", loadtest_server.url, "--model", CLASSIFIER, "--endpoint", "grpc", "--grpc-target",
                  f"127.0.0.1:{loadtest_server.grpc_port}", "--concurrency", "2", "--duration", "1.5", "--warmup",
                  "0", "--output", str(tmp_path))
    assert result.exit_code == 0, result.output
    run = _read_run(tmp_path)
    (step,) = run["steps"]
    _check_step(step)  # server figures come from the grpc/infer histogram series
    assert step["errors_by_status"] == {}


def test_every_served_rest_endpoint(loadtest_server: ServerProcess, tmp_path: Path) -> None:
    served = httpx.get(f"{loadtest_server.url}/v1/models", timeout=5).json()["models"]
    cases = [(m["name"], TASK_ENDPOINT[m["task"]]) for m in served]
    cases += [(m["name"], "explain") for m in served if m["explain_stages"] and m["task"] == "classification"]
    for model, endpoint in cases:
        out = tmp_path / f"{model}-{endpoint}"
        result = paca("--url", loadtest_server.url, "--model", model, "--endpoint", endpoint, "--concurrency", "1",
                      "--duration", "1", "--warmup", "0", "--output", str(out), "--slo", "errors<=0%")
        assert result.exit_code == 0, (model, endpoint, result.output)
        (step,) = _read_run(out)["steps"]
        assert step["ok"] > 0 and step["errors"] == 0


def test_refusals_exit_2_before_any_traffic(loadtest_server: ServerProcess, tmp_path: Path) -> None:
    remote = paca("--url", "http://10.0.0.1:8000", "--concurrency", "1", "--output", str(tmp_path / "r"))
    assert remote.exit_code == 2 and "non-loopback" in remote.output and "--allow-remote" in remote.output
    cases = {
        ("--concurrency", "1", "--rate", "5"): "exactly one of",
        ("--concurrency", "1", "--slo", "p99<=200ms@50rps"): "does not run",
        ("--rate", "5", "--slo", "p99 under 200"): "cannot parse SLO",
        ("--concurrency", "1,x"): "comma-separated numbers",
        ("--concurrency", "1", "--endpoint", "nope"): "choose from",
        ("--concurrency", "1", "--model", "no-such-model"): "is not served",
        ("--concurrency", "1", "--images", str(tmp_path / "missing")): "not a folder",
    }
    for args, message in cases.items():
        result = paca("--url", loadtest_server.url, *args, "--output", str(tmp_path / "x"))
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not (tmp_path / "x").exists() and not (tmp_path / "r").exists()


# --- the pieces, each against an independent expectation -----------------------------------------------------


def test_slo_grammar() -> None:
    parsed = slo.parse_slo("p99<=200ms@50rps")
    assert (parsed.metric, parsed.op, parsed.threshold, parsed.load, parsed.load_mode) == ("p99", "<=", 200, 50,
                                                                                           "rate")
    assert slo.parse_slo("p95 < 1.5s").threshold == 1500 and slo.parse_slo("p95 < 1.5s").load is None
    assert slo.parse_slo("errors<1%@16conc").load_mode == "concurrency"
    assert slo.parse_slo("throughput>=40rps").threshold == 40
    assert slo.parse_slo("p99<=200").threshold == 200  # latency in ms unless told
    for bad in ("p99=200ms", "p42<=1ms", "errors<=5ms", "p99<=200ms@50", "latency<1s"):
        with pytest.raises(slo.SLOError):
            slo.parse_slo(bad)
    steps = [{"mode": "rate", "level": 50.0, "label": "50 rps", "latency_ms": {"p99": 180.0}, "error_rate": 0.02,
              "throughput_rps": 49.0},
             {"mode": "rate", "level": 100.0, "label": "100 rps", "latency_ms": {"p99": 900.0}, "error_rate": 0.0,
              "throughput_rps": 70.0}]
    results = slo.evaluate([slo.parse_slo("p99<=200ms@50rps"), slo.parse_slo("errors<1%")], steps)
    assert [(r.step, r.passed) for r in results] == [("50 rps", True), ("50 rps", False), ("100 rps", True)]
    assert results[1].measured == pytest.approx(2.0)
    nan_step = [{**steps[0], "latency_ms": {"p99": float("nan")}}]
    assert not slo.evaluate([slo.parse_slo("p99<=200ms")], nan_step)[0].passed  # no answers: missed
    with pytest.raises(slo.SLOError, match="does not run"):
        slo.check_against_sweep([slo.parse_slo("p99<=1s@20rps")], "rate", [10.0, 50.0])


def test_metrics_parser_agrees_with_prometheus_client_on_the_live_exposition(loadtest_server: ServerProcess) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{loadtest_server.url}/metrics", timeout=5).text
    ours = server_metrics.parse_metrics(text)
    theirs: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # prometheus-client names every counter sample <family>_total; the exposition (and Prometheus) may not.
            name = sample.name if sample.name in ours else sample.name.removesuffix("_total")
            theirs.setdefault(name, []).append((dict(sample.labels), float(sample.value)))
    assert ours.keys() == theirs.keys() and "nv_inference_request_success" in ours
    for name, samples in theirs.items():
        assert sorted(map(repr, ours[name])) == sorted(map(repr, samples)), name
    escaped = server_metrics.parse_metrics('m{a="x\\"y\\\\z",le="+Inf"} +Inf 1700000000000\n')
    assert escaped == {"m": [({"a": 'x"y\\z', "le": "+Inf"}, float("inf"))]}


def test_histogram_quantile_matches_promql_interpolation() -> None:
    # 100 observations: 10 in (0, 0.1], 80 in (0.1, 0.5], 10 in (0.5, 1]; PromQL interpolates linearly inside.
    cumulative = [(0.1, 10.0), (0.5, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert server_metrics.histogram_quantile(0.5, cumulative) == pytest.approx(0.1 + 0.4 * 40 / 80)
    assert server_metrics.histogram_quantile(0.95, cumulative) == pytest.approx(0.5 + 0.5 * 5 / 10)
    assert server_metrics.histogram_quantile(0.05, cumulative) == pytest.approx(0.05)
    beyond = [(1.0, 5.0), (float("inf"), 10.0)]
    assert server_metrics.histogram_quantile(0.99, beyond) == 1.0  # in +Inf: the largest finite bound
    assert server_metrics.batch_distribution([(1, 3.0), (2, 3.0), (4, 7.0), (6, 8.0), (float("inf"), 8.0)]) == {
        "1": 3, "3-4": 4, "5-6": 1}


def test_arrival_schedules() -> None:
    uniform = driver.arrival_times(10, 2.0, "uniform", seed=0)
    assert len(uniform) == 20 and uniform[:3] == pytest.approx([0.0, 0.1, 0.2])
    poisson = driver.arrival_times(200, 10.0, "poisson", seed=3)
    assert poisson == driver.arrival_times(200, 10.0, "poisson", seed=3)  # seeded
    assert 1800 < len(poisson) < 2200  # 2000 expected, σ ≈ 45
    gaps = [b - a for a, b in itertools.pairwise(poisson)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 200, rel=0.1)


class _SlowHandler(StubHandler):
    """A real HTTP server whose every answer takes 0.3 s: what an overloaded model server looks like."""

    protocol_version = "HTTP/1.0"  # one request per connection
    delay_s = 0.3

    def do_POST(self) -> None:  # http.server calls do_<METHOD>
        self.read_body()
        time.sleep(self.delay_s)
        self.answer(200, b'{"results": [{}]}', {"Content-Type": "application/json"})


@pytest.fixture
def slow_server() -> Iterator[str]:
    with serving(_SlowHandler) as url:
        yield url


def _max_overlap(samples: list[driver.Sample]) -> int:
    events = sorted([(s.sent_s, 1) for s in samples] + [(s.sent_s + s.latency_s, -1) for s in samples])
    current = peak = 0
    for _, change in events:
        current += change
        peak = max(peak, current)
    return peak


def test_open_loop_arrivals_do_not_wait_for_answers(slow_server: str) -> None:
    import asyncio

    from loadtest.workload import HttpRequest

    requests = [HttpRequest("/v1/models/m/classify", b"x", {"Content-Type": "image/png"}, "x.png")]

    async def run(mode: str) -> list[driver.Sample]:
        async with http_load.load_session(slow_server, 64, 10) as session:
            send = driver.http_sender(session, "classify")
            if mode == "closed":
                return await driver.closed_loop(send, requests, 1, 1.5)
            return await driver.open_loop(send, requests, driver.arrival_times(20, 1.5, "uniform", 0), 64)

    closed, opened = asyncio.run(run("closed")), asyncio.run(run("open"))
    # One closed-loop client waits for each 0.3 s answer: at most 1.5 / 0.3 requests, never two at once.
    assert len(closed) <= 6 and _max_overlap(closed) == 1
    # The open loop sent all 30 scheduled arrivals, many while earlier ones were still unanswered.
    assert len(opened) == 30 and all(s.ok for s in opened)
    assert _max_overlap(opened) >= 3


def test_open_loop_counts_arrivals_over_the_in_flight_cap_as_dropped(slow_server: str) -> None:
    import asyncio

    from loadtest.workload import HttpRequest

    requests = [HttpRequest("/x", b"x", {}, "x.png")]

    async def run() -> list[driver.Sample]:
        async with http_load.load_session(slow_server, 100, 10) as session:
            schedule = driver.arrival_times(40, 0.5, "uniform", 0)  # 20 arrivals while each answer takes 0.3 s
            return await driver.open_loop(driver.http_sender(session, "classify"), requests, schedule, 2)

    samples = asyncio.run(run())
    dropped = [s for s in samples if s.status == "client-dropped"]
    assert len(samples) == 20 and dropped and not any(s.ok for s in dropped)
    assert _max_overlap([s for s in samples if s.status != "client-dropped"]) <= 2


def test_model_and_endpoint_choice() -> None:
    from loadtest.workload import WorkloadError, choose_model

    served = [{"name": "seg", "task": "segmentation", "explain_stages": [1]},
              {"name": "cls", "task": "classification", "explain_stages": []}]
    assert choose_model(served, None, None) == (served[0], "segment")  # first model, its REST task
    assert choose_model(served, None, "classify") == (served[1], "classify")
    assert choose_model(served, "cls", "v2") == (served[1], "v2")
    assert choose_model(served, None, "explain") == (served[0], "explain")
    with pytest.raises(WorkloadError, match="its REST endpoint is classify"):
        choose_model(served, "cls", "detect")
    with pytest.raises(WorkloadError, match="exports no cluster maps"):
        choose_model(served, "cls", "explain")
    with pytest.raises(WorkloadError, match="no served model fits"):
        choose_model(served, None, "detect")
