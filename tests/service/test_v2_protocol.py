"""KServe v2 over HTTP (and gRPC) against the real server: raw protocol checks with httpx, then the official
tritonclient (HTTP and gRPC, from the tools venv) and perf_analyzer where installed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support import images, reference
from tests.support.fixture_models import CLASSIFIER, DETECTOR, SEGMENTER
from tests.support.paths import REPO_ROOT
from tests.support.server import perf_analyzer_path, tools_python


def _pixels(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _reference_logits(artifacts: Path, pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([reference.session(artifacts / "classifier.onnx").run(["logits"], {
        "pixel_values": pixels[i:i + 1]})[0] for i in range(len(pixels))])


def test_server_metadata_health_and_model_ready(client: httpx.Client) -> None:
    metadata = client.get("/v2").json()
    assert metadata["name"] == "paca-serve"
    assert {"binary_tensor_data", "model_configuration", "statistics", "classification"} <= set(
        metadata["extensions"])
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get(f"/v2/models/{CLASSIFIER}/ready").json() == {"name": CLASSIFIER, "ready": True}
    assert client.get(f"/v2/models/{CLASSIFIER}/versions/1/ready").status_code == 200
    assert client.get(f"/v2/models/{CLASSIFIER}/versions/7/ready").status_code == 404
    missing = client.get("/v2/models/nope/ready")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_model_metadata_and_config_follow_triton_conventions(client: httpx.Client) -> None:
    metadata = client.get(f"/v2/models/{CLASSIFIER}").json()
    assert metadata["inputs"] == [{"name": "pixel_values", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert metadata["outputs"][0] == {"name": "logits", "datatype": "FP32", "shape": [-1, 10]}
    config = client.get(f"/v2/models/{CLASSIFIER}/config").json()
    assert config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == [3, 32, 32] and config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["output"][0]["dims"] == [10] and config["output"][0]["label_filename"] == "labels.txt"
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 20000
    assert config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 64
    # Detection batches too (same-size images): dims without the batch dim, D rows per image, a count.
    det_config = client.get(f"/v2/models/{DETECTOR}/config").json()
    assert det_config["max_batch_size"] == 4 and "dynamic_batching" in det_config
    assert det_config["input"][0]["dims"] == [3, -1, -1]
    outputs = {o["name"]: o for o in det_config["output"]}
    assert {name: o["dims"] for name, o in outputs.items()} == {
        "boxes": [6, 4], "scores": [6], "labels": [6], "mask_probs": [6, 28, 28], "num_detections": [1],
        "clusters_stage1": [4, -1, -1]}
    # A batch-only tensor: Triton's convention, dims [1] with an empty reshape (the model's shape is [B]).
    assert outputs["num_detections"]["reshape"] == {"shape": []} and "reshape" not in outputs["boxes"]
    det_metadata = client.get(f"/v2/models/{DETECTOR}").json()
    assert det_metadata["inputs"][0]["shape"] == [-1, 3, -1, -1]
    assert {o["name"]: o["shape"] for o in det_metadata["outputs"]}["num_detections"] == [-1]
    # The artifact's self-description travels as parameters (a remote PaCa backend reads it back).
    assert config["parameters"]["paca.arch"] == {"string_value": "tiny_digits_cls"}
    assert config["parameters"]["paca.labels"] == {"string_value": "digits10"}
    seg_config = client.get(f"/v2/models/{SEGMENTER}/config").json()
    assert seg_config["instance_group"][0]["count"] == 2 and seg_config["parameters"]["paca.task"] == {
        "string_value": "segmentation"}
    seg_metadata = client.get(f"/v2/models/{SEGMENTER}").json()
    assert seg_metadata["inputs"][0]["shape"] == [-1, 3, -1, -1]


def test_json_infer_matches_reference_and_omits_output_parameters(client: httpx.Client, artifacts_dir) -> None:
    pixels = _pixels(0, (2, 3, 32, 32))
    body = {"id": "req-7", "inputs": [{"name": "pixel_values", "shape": list(pixels.shape), "datatype": "FP32",
                                        "data": pixels.tolist()}],
            "outputs": [{"name": "logits"}]}
    response = client.post(f"/v2/models/{CLASSIFIER}/infer", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["id"] == "req-7" and payload["model_name"] == CLASSIFIER
    (output,) = payload["outputs"]
    assert "parameters" not in output and output["shape"] == [2, 10] and output["datatype"] == "FP32"
    np.testing.assert_allclose(np.array(output["data"]).reshape(2, 10), _reference_logits(artifacts_dir, pixels),
                               rtol=1e-5, atol=1e-5)


def test_binary_infer_both_ways(client: httpx.Client, artifacts_dir) -> None:
    pixels = _pixels(1, (3, 3, 32, 32))
    header = json.dumps({
        "inputs": [{"name": "pixel_values", "shape": [3, 3, 32, 32], "datatype": "FP32",
                    "parameters": {"binary_data_size": pixels.nbytes}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}, {"name": "clusters_stage3"}],
    }).encode()
    response = client.post(f"/v2/models/{CLASSIFIER}/infer", content=header + pixels.tobytes(), headers={
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    reply = json.loads(response.content[:length])
    logits_entry, clusters_entry = reply["outputs"]
    assert logits_entry["parameters"] == {"binary_data_size": 3 * 10 * 4}
    assert "parameters" not in clusters_entry and clusters_entry["shape"] == [3, 4, 2, 2]
    logits = np.frombuffer(response.content[length:], dtype="<f4").reshape(3, 10)
    np.testing.assert_allclose(logits, _reference_logits(artifacts_dir, pixels), rtol=1e-5, atol=1e-5)


def test_bytes_input_and_classification_extension(client: httpx.Client, artifacts_dir) -> None:
    import base64

    encoded = [images.png(40 + i) for i in range(2)]
    body = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                        "data": [base64.b64encode(e).decode() for e in encoded]}],
            "outputs": [{"name": "logits", "parameters": {"classification": 2}}]}
    response = client.post(f"/v2/models/{CLASSIFIER}/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [2, 2]
    for row, data in zip(np.array(output["data"]).reshape(2, 2), encoded, strict=True):
        logits = reference.run_one(artifacts_dir / "classifier.onnx", data, ["logits"])[0]["logits"][0]
        best = int(np.argmax(logits))
        value, index, label = row[0].split(":")
        assert (int(index), label) == (best, str(best)) and float(value) == pytest.approx(logits[best], abs=1e-5)


V2_BAD = [
    ("wrong shape", {"inputs": [{"name": "pixel_values", "shape": [1, 3, 8, 8], "datatype": "FP32",
                                  "data": [0.0] * 192}]}, "shape"),
    ("wrong datatype", {"inputs": [{"name": "pixel_values", "shape": [1, 3, 32, 32], "datatype": "INT32",
                                     "data": [0] * 3072}]}, "FP32"),
    ("value count", {"inputs": [{"name": "pixel_values", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                  "data": [0.0] * 10}]}, "values"),
    ("unknown input", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, "unknown input"),
    ("no inputs", {"inputs": []}, "inputs"),
    ("unknown output", {"inputs": [{"name": "pixel_values", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                     "data": [0.0] * 3072}], "outputs": [{"name": "nope"}]}, "no output"),
    ("bad b64", {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["@@"]}]}, "base64"),
    ("not an image", {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8="]}]},
     "not a recognised image"),
]


@pytest.mark.parametrize(("case", "body", "message"), V2_BAD, ids=[b[0] for b in V2_BAD])
def test_v2_bad_requests_get_400_with_error_body(client: httpx.Client, case, body, message) -> None:
    content = json.dumps(body, allow_nan=True)
    response = client.post(f"/v2/models/{CLASSIFIER}/infer", content=content,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert message.lower() in response.json()["error"].lower()


def test_v2_binary_size_and_header_errors(client: httpx.Client) -> None:
    header = json.dumps({"inputs": [{"name": "pixel_values", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 3072 * 4}}]}).encode()
    short = client.post(f"/v2/models/{CLASSIFIER}/infer", content=header + b"\0" * 100,
                        headers={"Inference-Header-Content-Length": str(len(header))})
    assert short.status_code == 400 and "binary" in short.json()["error"]
    extra = client.post(f"/v2/models/{CLASSIFIER}/infer", content=header + b"\0" * (3072 * 4 + 8),
                        headers={"Inference-Header-Content-Length": str(len(header))})
    assert extra.status_code == 400 and "not claimed" in extra.json()["error"]
    too_long = client.post(f"/v2/models/{CLASSIFIER}/infer", content=header,
                           headers={"Inference-Header-Content-Length": "999999"})
    assert too_long.status_code == 400
    bad_json = client.post(f"/v2/models/{CLASSIFIER}/infer", content=b"{oops",
                           headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["error"]
    unknown = client.post("/v2/models/nope/infer", json={"inputs": []})
    assert unknown.status_code == 404
    # The server keeps serving.
    assert client.get("/v2/health/ready").status_code == 200


def test_stats_and_repository_index(client: httpx.Client) -> None:
    client.post(f"/v2/models/{CLASSIFIER}/infer", json={"inputs": [
        {"name": "pixel_values", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.5] * 3072}]})
    stats = client.get(f"/v2/models/{CLASSIFIER}/stats").json()["model_stats"][0]
    assert stats["name"] == CLASSIFIER and stats["inference_count"] >= 1 and stats["execution_count"] >= 1
    assert set(stats["inference_stats"]) >= {"success", "fail", "queue", "compute_input", "compute_infer",
                                             "compute_output", "cache_hit", "cache_miss"}
    assert stats["inference_stats"]["success"]["count"] >= 1 and stats["inference_stats"]["queue"]["ns"] > 0
    everything = client.get("/v2/models/stats").json()["model_stats"]
    assert {s["name"] for s in everything} == {CLASSIFIER, SEGMENTER, DETECTOR}
    index = client.post("/v2/repository/index").json()
    assert {(m["name"], m["state"]) for m in index} == {(n, "READY") for n in (CLASSIFIER, SEGMENTER, DETECTOR)}


def _run_tritonclient(protocol: str, url: str, tmp_path: Path, artifacts_dir: Path) -> tuple[dict, dict]:
    python = tools_python()
    if python is None:
        pytest.skip("tritonclient is not installed in .venv-tools (make tools)")
    pixels = _pixels(2, (4, 3, 32, 32))
    np.save(tmp_path / "pixels.npy", pixels)
    scene = _pixels(3, (1, 3, 96, 128))
    np.save(tmp_path / "scene.npy", scene)
    for i in range(3):
        (tmp_path / f"image{i}.png").write_bytes(images.png(60 + i))
    result = subprocess.run(
        [str(python), str(REPO_ROOT / "tests" / "support" / "triton_client_check.py"), protocol, url,
         str(tmp_path), CLASSIFIER, DETECTOR],
        capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / f"report-{protocol}.json").read_text())
    arrays = dict(np.load(tmp_path / f"arrays-{protocol}.npz", allow_pickle=True))
    return report, arrays


def _check_tritonclient_results(report: dict, arrays: dict, tmp_path: Path, artifacts_dir: Path) -> None:
    assert report["live"] and report["ready"] and report["model_ready"]
    assert "binary_tensor_data" in report["extensions"]
    assert report["max_batch_size"] == 8 and report["config_inputs"] == ["pixel_values"]
    assert report["response_id"] == "check-1"
    pixels = np.load(tmp_path / "pixels.npy")
    expected = _reference_logits(artifacts_dir, pixels)
    np.testing.assert_allclose(arrays["logits_binary"], expected, rtol=1e-5, atol=1e-5)
    if "logits_json" in arrays:
        np.testing.assert_allclose(arrays["logits_json"], expected, rtol=1e-5, atol=1e-5)
    for row, logits in zip(report["top3"], expected, strict=True):
        assert [int(entry.split(":")[1]) for entry in row] == list(np.argsort(-logits, kind="stable")[:3])
    from_images = np.stack([
        reference.run_one(artifacts_dir / "classifier.onnx", (tmp_path / f"image{i}.png").read_bytes(),
                          ["logits"])[0]["logits"][0] for i in range(3)])
    np.testing.assert_allclose(arrays["logits_from_images"], from_images, rtol=1e-5, atol=1e-5)
    scene = np.load(tmp_path / "scene.npy")
    det_outputs = ("boxes", "scores", "labels", "mask_probs", "num_detections")
    det = reference.session(artifacts_dir / "detector.onnx").run(list(det_outputs), {"pixel_values": scene})
    assert 0 < det[-1][0] < 6  # some real rows, some padding
    for name, want in zip(det_outputs, det, strict=True):
        np.testing.assert_allclose(arrays[f"det_{name}"], want, rtol=1e-5, atol=1e-5)
    errors = report["errors"]
    assert errors["wrong_shape"] and "shape" in errors["wrong_shape"]
    assert errors["unknown_model"] and "no-such-model" in errors["unknown_model"]
    assert errors["unknown_output"] and "nope" in errors["unknown_output"]
    assert report["stats"]["inference_count"] >= 4


def test_tritonclient_http(server, tmp_path, artifacts_dir) -> None:
    report, arrays = _run_tritonclient("http", server.url.removeprefix("http://"), tmp_path, artifacts_dir)
    _check_tritonclient_results(report, arrays, tmp_path, artifacts_dir)


def test_perf_analyzer_http(server, tmp_path) -> None:
    binary = perf_analyzer_path()
    if binary is None:
        pytest.skip("perf_analyzer is not installed (bash scripts/install-perf-analyzer.sh)")
    csv = tmp_path / "perf.csv"
    result = subprocess.run(
        [str(binary), "-m", CLASSIFIER, "-u", server.url.removeprefix("http://"), "-i", "http", "-b", "2",
         "--concurrency-range", "1:4:3", "--measurement-mode", "count_windows", "--measurement-request-count",
         "30", "--max-trials", "5", "-s", "100", "-f", str(csv)],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Throughput:" in result.stdout and "Server:" in result.stdout  # server section = /stats worked
    rows = csv.read_text().strip().splitlines()
    assert rows[0].startswith("Concurrency,Inferences/Second") and len(rows) == 3
    assert all(float(row.split(",")[1]) > 0 for row in rows[1:])


def test_tritonclient_grpc(server, tmp_path, artifacts_dir) -> None:
    report, arrays = _run_tritonclient("grpc", f"127.0.0.1:{server.grpc_port}", tmp_path, artifacts_dir)
    _check_tritonclient_results(report, arrays, tmp_path, artifacts_dir)


def test_perf_analyzer_grpc(server, tmp_path) -> None:
    binary = perf_analyzer_path()
    if binary is None:
        pytest.skip("perf_analyzer is not installed (bash scripts/install-perf-analyzer.sh)")
    result = subprocess.run(
        [str(binary), "-m", CLASSIFIER, "-u", f"127.0.0.1:{server.grpc_port}", "-i", "grpc",
         "--concurrency-range", "2:2:1", "--measurement-mode", "count_windows", "--measurement-request-count",
         "30", "--max-trials", "5", "-s", "100"],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Throughput:" in result.stdout and "Server:" in result.stdout


def test_concurrent_v2_requests_with_their_own_batches_are_split_back_correctly(server, artifacts_dir) -> None:
    """Requests carrying 1–3 samples each share backend batches; every request gets exactly its rows back."""
    import asyncio

    tensors = [_pixels(100 + i, (1 + i % 3, 3, 32, 32)) for i in range(12)]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            return list(await asyncio.gather(*(
                http.post(f"/v2/models/{CLASSIFIER}/infer", json={"inputs": [{
                    "name": "pixel_values", "shape": list(t.shape), "datatype": "FP32", "data": t.ravel().tolist()}],
                    "outputs": [{"name": "logits"}, {"name": "clusters_stage1"}]})
                for t in tensors)))

    before = httpx.get(f"{server.url}/v2/models/{CLASSIFIER}/stats").json()["model_stats"][0]
    responses = asyncio.run(send_all())
    after = httpx.get(f"{server.url}/v2/models/{CLASSIFIER}/stats").json()["model_stats"][0]
    session = reference.session(artifacts_dir / "classifier.onnx")
    for pixels, response in zip(tensors, responses, strict=True):
        assert response.status_code == 200, response.text
        outputs = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]}
        logits, clusters = session.run(["logits", "clusters_stage1"], {"pixel_values": pixels})
        np.testing.assert_allclose(outputs["logits"], logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outputs["clusters_stage1"], clusters, rtol=1e-5, atol=1e-6)
    samples = sum(len(t) for t in tensors)
    assert after["inference_count"] - before["inference_count"] == samples
    assert after["execution_count"] - before["execution_count"] < len(tensors)
