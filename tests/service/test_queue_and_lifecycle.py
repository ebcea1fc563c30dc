"""Queue policy (503 when full, 504 past the deadline), readiness after warm-up, graceful shutdown, metrics."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import httpx
import pytest

from tests.support import images
from tests.support.fixture_models import CLASSIFIER, repository_dict
from tests.support.server import start_server, stop_server, wait_until_ready

# A batch of the classifier is held open for HOLD_MS unless it fills up (8), so requests provably wait.
HOLD_MS = 2000
SLOW_BATCHER = {CLASSIFIER: {"batching": {"max_queue_delay_ms": HOLD_MS, "max_queue_size": 3, "policy": "delay",
                                          "queue_timeout_ms": 60000}}}


@pytest.fixture(scope="module")
def slow_server(artifacts_dir, tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("slow"), repository_dict(artifacts_dir, **SLOW_BATCHER))
    yield server
    stop_server(server)


async def _classify_many(url: str, count: int, **params) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        return list(await asyncio.gather(*(
            http.post(f"/v1/models/{CLASSIFIER}/classify", params=params, files={"image": images.png(i)})
            for i in range(count)
        )))


def _metric_line(text: str, prefix: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(prefix)).rsplit(" ", 1)[1])


def test_full_queue_answers_503_with_retry_after(slow_server) -> None:
    before = httpx.get(f"{slow_server.url}/metrics").text
    responses = asyncio.run(_classify_many(slow_server.url, 6))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 503, 503, 503]
    for rejected in (r for r in responses if r.status_code == 503):
        assert rejected.headers["retry-after"] == "1"
        assert "queue is full" in rejected.json()["error"]
    after = httpx.get(f"{slow_server.url}/metrics").text
    rejected_metric = f'nv_inference_request_failure{{model="{CLASSIFIER}",version="1",reason="REJECTED"}}'
    assert _metric_line(after, rejected_metric) - _metric_line(before, rejected_metric) == 3
    # The three accepted requests shared one batch: it closed when the oldest had waited HOLD_MS.
    stats = httpx.get(f"{slow_server.url}/v2/models/{CLASSIFIER}/stats").json()["model_stats"][0]
    assert any(entry["batch_size"] == 3 for entry in stats["batch_stats"])


def test_request_past_its_queue_deadline_gets_504_and_others_still_complete(slow_server) -> None:
    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=slow_server.url, timeout=60) as http:
            patient = http.post(f"/v1/models/{CLASSIFIER}/classify", files={"image": images.png(1)})
            hasty = http.post(f"/v1/models/{CLASSIFIER}/classify", params={"timeout_ms": 100},
                              files={"image": images.png(2)})
            return tuple(await asyncio.gather(patient, hasty))

    patient, hasty = asyncio.run(scenario())
    assert hasty.status_code == 504 and "deadline" in hasty.json()["error"]
    assert patient.status_code == 200


def test_adaptive_batching_does_not_hold_a_lone_request(artifacts_dir, tmp_path) -> None:
    """The same 2 s batch delay under the default "adaptive" policy: a request with nothing else on its way runs
    at once (its queue time, in Server-Timing, is far below the delay), while "delay" holds it (see above)."""
    adaptive = {CLASSIFIER: {"batching": {"max_queue_delay_ms": HOLD_MS, "max_queue_size": 3,
                                          "queue_timeout_ms": 60000}}}
    server = start_server(tmp_path, repository_dict(artifacts_dir, **adaptive))
    try:
        response = httpx.post(f"{server.url}/v1/models/{CLASSIFIER}/classify", files={"image": images.png(1)},
                              timeout=30)
        assert response.status_code == 200
        timing = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
        assert set(timing) >= {"decode", "preprocess", "queue", "inference", "postprocess", "total"}
        assert float(timing["queue"]) < HOLD_MS / 4
    finally:
        stop_server(server)


def test_a_client_batch_larger_than_max_batch_size_is_refused(slow_server) -> None:
    import numpy as np

    body = {"inputs": [{"name": "pixel_values", "shape": [9, 3, 32, 32], "datatype": "FP32",
                        "data": np.zeros(9 * 3 * 32 * 32).tolist()}]}
    response = httpx.post(f"{slow_server.url}/v2/models/{CLASSIFIER}/infer", json=body, timeout=30)
    assert response.status_code == 400 and "max_batch_size" in response.json()["error"]


def test_metrics_use_triton_names_and_histograms(slow_server) -> None:
    asyncio.run(_classify_many(slow_server.url, 2))
    text = httpx.get(f"{slow_server.url}/metrics").text
    for family in ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                   "nv_inference_exec_count", "nv_inference_pending_request_count",
                   "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                   "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
                   "nv_inference_compute_output_duration_us"):
        assert f"# TYPE {family} " in text, family
        assert f'{family}{{model="{CLASSIFIER}",version="1"' in text, family
    assert "# TYPE paca_request_duration_seconds histogram" in text
    assert f'paca_batch_size_bucket{{le="+Inf",model="{CLASSIFIER}"}}' in text
    assert f'paca_queue_duration_seconds_count{{model="{CLASSIFIER}"}}' in text
    assert f'paca_request_duration_seconds_count{{api="v1/classify",model="{CLASSIFIER}",status="200"}}' in text
    # The queue held every request ~HOLD_MS: the cumulative queue time shows it.
    queue_us = _metric_line(text, f'nv_inference_queue_duration_us{{model="{CLASSIFIER}",version="1"}}')
    successes = _metric_line(text, f'nv_inference_request_success{{model="{CLASSIFIER}",version="1"}}')
    assert queue_us / successes > 0.5 * HOLD_MS * 1000 * 0.5


def test_graceful_shutdown_finishes_accepted_requests(artifacts_dir, tmp_path) -> None:
    server = start_server(tmp_path, repository_dict(artifacts_dir, **SLOW_BATCHER))
    try:
        results: list[httpx.Response] = []
        worker = threading.Thread(target=lambda: results.extend(asyncio.run(_classify_many(server.url, 3))))
        worker.start()
        # Wait until all three are queued (held by the batch delay), then ask the server to stop.
        deadline = time.monotonic() + 10
        pending = f'nv_inference_pending_request_count{{model="{CLASSIFIER}",version="1"}}'
        while _metric_line(httpx.get(f"{server.url}/metrics").text, pending) < 3:
            assert time.monotonic() < deadline, "requests never reached the queue"
            time.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        worker.join(60)
        assert [r.status_code for r in results] == [200, 200, 200]
        # uvicorn re-raises the caught SIGTERM after its graceful shutdown; our lifespan must have completed.
        assert server.process.wait(30) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/v2/health/live", timeout=2)
        log = server.log()
        messages = [json.loads(line)["message"] for line in log.splitlines() if line.startswith("{")]
        assert any(m.startswith("shutting down: draining queues") for m in messages) and "stopped" in messages
    finally:
        stop_server(server)


def test_ready_only_after_every_model_warmed_up(artifacts_dir, tmp_path) -> None:
    # 8 batch sizes × 120 runs: seconds of warm-up, so that even a starved client sees it under way.
    slow_warmup = {CLASSIFIER: {"warmup": {"count": 120}}}
    server = start_server(tmp_path, repository_dict(artifacts_dir, **slow_warmup), wait_ready=False)
    try:
        seen_live_not_ready = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                live = httpx.get(f"{server.url}/v2/health/live", timeout=2)
                ready = httpx.get(f"{server.url}/v2/health/ready", timeout=2)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            assert live.status_code == 200
            if ready.status_code == 200:
                break
            assert ready.status_code == 503 and ready.json() == {"ready": False}
            if not seen_live_not_ready:
                early = httpx.post(f"{server.url}/v1/models/{CLASSIFIER}/classify", files={"image": images.png(1)})
                assert early.status_code == 503 and "not ready" in early.json()["error"]
            seen_live_not_ready = True
            time.sleep(0.05)
        assert seen_live_not_ready, "the server should be live (not ready) while warming up"
        wait_until_ready(server)
        assert "ready after 960 warm-up runs" in server.log()
        response = httpx.post(f"{server.url}/v1/models/{CLASSIFIER}/classify", files={"image": images.png(1)})
        assert response.status_code == 200
    finally:
        stop_server(server)


def test_missing_artifact_falls_back_loudly_to_an_exported_arch(artifacts_dir, tmp_path) -> None:
    import shutil

    (tmp_path / "artifacts" / "fallback").mkdir(parents=True)
    # The stand-in export already exists (the export itself is the export engineer's, tested there).
    shutil.copy(artifacts_dir / "classifier.onnx", tmp_path / "artifacts" / "fallback" / "tiny_digits_cls.onnx")
    repository = {"models": [{"name": "demo-digits-classifier", "max_batch_size": 2,
                              "artifact": str(tmp_path / "artifacts" / "demo" / "demo-digits-classifier.onnx"),
                              "fallback_arch": "tiny_digits_cls"}]}
    server = start_server(tmp_path, repository)
    try:
        assert "UNTRAINED (random) weights" in server.log() and "paca demo ensure" in server.log()
        response = httpx.post(f"{server.url}/v1/models/demo-digits-classifier/classify",
                              files={"image": images.png(5)}, timeout=30)
        assert response.status_code == 200
    finally:
        stop_server(server)


def test_a_model_that_cannot_load_stops_the_server_with_a_clear_message(tmp_path) -> None:
    """The artifact exists but is not a model: the server starts, the load fails, the process exits 1 (a failure,
    not the 143 of a kill) after saying why."""
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx file")
    server = start_server(tmp_path, {"models": [{"name": "ghost", "artifact": str(corrupt)}]}, wait_ready=False)
    assert server.process.wait(60) == 1
    log = server.log()
    assert "model 'ghost'" in log and "a model failed to load" in log and "PACA_EXIT_ON_ERROR" in log
