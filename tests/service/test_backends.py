"""The other backends behind the same interface, each where it can run here:

- triton (remote): a second server whose models live on the first one (scale-out through the v2 protocol);
- torch (eager, CPU): the same weights as the ONNX artifact, served from the checkpoint;
- tensorrt: only with TensorRT and a GPU (skips otherwise).
"""

from __future__ import annotations

import asyncio
import subprocess

import httpx
import numpy as np
import pytest

from tests.support import images
from tests.support.fixture_models import CLASSIFIER, DETECTOR, SEGMENTER
from tests.support.paths import REPO_ROOT
from tests.support.server import free_port, running_process, start_server, stop_server


@pytest.fixture(scope="module")
def second_server(server, artifacts_dir, tmp_path_factory):
    repository = {"models": [
        {"name": "remote-digits", "backend": "triton", "max_batch_size": 8,
         "options": {"url": server.url, "model": CLASSIFIER}},
        {"name": "remote-seg", "backend": "triton", "max_batch_size": 4,
         "options": {"url": server.url, "model": SEGMENTER}, "warmup": {"image_sizes": [[120, 160]]}},
        {"name": "remote-det", "backend": "triton", "max_batch_size": 1,
         "options": {"url": server.url, "model": DETECTOR}, "warmup": {"image_sizes": [[120, 160]]}},
        {"name": "torch-digits", "backend": "torch", "arch": "tiny_digits_cls",
         "checkpoint": str(artifacts_dir / "classifier.safetensors"), "max_batch_size": 8,
         "options": {"threads": 1}},
    ]}
    process = start_server(tmp_path_factory.mktemp("second"), repository)
    yield process
    stop_server(process)


async def _post_all(url: str, path: str, payloads: list[bytes], **params) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        return list(await asyncio.gather(*(
            http.post(path, params=params, files={"image": ("x.png", data)}) for data in payloads)))


def test_remote_and_torch_backends_describe_themselves(second_server) -> None:
    models = {m["name"]: m for m in httpx.get(f"{second_server.url}/v1/models").json()["models"]}
    assert models["remote-digits"]["backend"] == "triton" and models["remote-digits"]["task"] == "classification"
    assert models["remote-seg"]["task"] == "segmentation" and models["remote-det"]["task"] == "detection"
    assert models["torch-digits"]["backend"] == "torch" and models["torch-digits"]["explain_stages"] == [1, 2, 3]
    config = httpx.get(f"{second_server.url}/v2/models/torch-digits/config").json()
    assert config["platform"] == "pytorch_libtorch" and config["output"][0]["dims"] == [10]


@pytest.mark.parametrize("served", ["remote-digits", "torch-digits"])
def test_classification_equals_the_onnxruntime_server(server, second_server, served: str) -> None:
    payloads = [images.png(800 + i, (50 + 9 * i, 40 + 4 * i)) for i in range(10)]
    local = asyncio.run(_post_all(server.url, f"/v1/models/{CLASSIFIER}/classify", payloads, k=10))
    other = asyncio.run(_post_all(second_server.url, f"/v1/models/{served}/classify", payloads, k=10))
    for a, b in zip(local, other, strict=True):
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        top_a, top_b = a.json()["results"][0]["top_k"], b.json()["results"][0]["top_k"]
        assert [t["index"] for t in top_a] == [t["index"] for t in top_b]
        np.testing.assert_allclose([t["score"] for t in top_a], [t["score"] for t in top_b], atol=1e-5)


def test_torch_backend_explains_like_the_onnx_model(server, second_server) -> None:
    data = images.jpeg(900, (100, 70))
    onnx_result = httpx.post(f"{server.url}/v1/models/{CLASSIFIER}/explain", files={"image": data}, timeout=60)
    torch_result = httpx.post(f"{second_server.url}/v1/models/torch-digits/explain", files={"image": data},
                              timeout=60)
    assert onnx_result.status_code == torch_result.status_code == 200
    for a, b in zip(onnx_result.json()["results"][0]["stages"], torch_result.json()["results"][0]["stages"],
                    strict=True):
        assert (np.array(a["assignment"]) == np.array(b["assignment"])).mean() > 0.95  # ties may flip


def test_remote_dense_models_equal_the_onnxruntime_server(server, second_server) -> None:
    seg_data = images.png(950, (140, 100))
    local = httpx.post(f"{server.url}/v1/models/{SEGMENTER}/segment", files={"image": seg_data},
                       headers={"Accept": "image/png"}, timeout=60)
    remote = httpx.post(f"{second_server.url}/v1/models/remote-seg/segment", files={"image": seg_data},
                        headers={"Accept": "image/png"}, timeout=60)
    assert local.status_code == remote.status_code == 200 and local.content == remote.content
    det_data = images.jpeg(951, (150, 110))
    local = httpx.post(f"{server.url}/v1/models/{DETECTOR}/detect", files={"image": det_data}, timeout=60)
    remote = httpx.post(f"{second_server.url}/v1/models/remote-det/detect", files={"image": det_data}, timeout=60)
    assert local.status_code == remote.status_code == 200
    assert local.json()["results"] == remote.json()["results"]


def test_remote_errors_surface_as_500_with_the_remote_message(second_server) -> None:
    # A pixel tensor of the wrong size passes the second server's checks only if shapes are variable; the
    # classifier's are fixed, so the local check already answers 400 naming the expected shape.
    body = {"inputs": [{"name": "pixel_values", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [0.0] * 192}]}
    response = httpx.post(f"{second_server.url}/v2/models/remote-digits/infer", json=body, timeout=30)
    assert response.status_code == 400 and "32" in response.json()["error"]


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_backend_serves_an_engine_like_onnxruntime(server, artifacts_dir, tmp_path) -> None:
    pytest.importorskip("tensorrt")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    import shutil

    from export.tensorrt.builder import build_engine
    from export.tensorrt.profiles import ShapeProfile

    onnx_path = tmp_path / "classifier.onnx"
    shutil.copy(artifacts_dir / "classifier.onnx", onnx_path)
    engine = tmp_path / "classifier.plan"
    build_engine(onnx_path, engine, ShapeProfile(min=(1, 3, 32, 32), opt=(4, 3, 32, 32), max=(8, 3, 32, 32)))
    trt_server = start_server(tmp_path, {"models": [
        {"name": "trt-digits", "backend": "tensorrt", "artifact": str(engine), "max_batch_size": 8,
         "options": {"onnx": str(onnx_path)}}]})
    try:
        payloads = [images.png(990 + i) for i in range(6)]
        local = asyncio.run(_post_all(server.url, f"/v1/models/{CLASSIFIER}/classify", payloads, k=3))
        remote = asyncio.run(_post_all(trt_server.url, "/v1/models/trt-digits/classify", payloads, k=3))
        for a, b in zip(local, remote, strict=True):
            assert b.status_code == 200, b.text
            top_a, top_b = a.json()["results"][0]["top_k"], b.json()["results"][0]["top_k"]
            assert top_a[0]["index"] == top_b[0]["index"]
            np.testing.assert_allclose([t["score"] for t in top_a], [t["score"] for t in top_b], atol=1e-3)
    finally:
        stop_server(trt_server)


PYTRITON_PYTHON = REPO_ROOT / "tools" / "venv-pytriton" / "bin" / "python"


@pytest.fixture(scope="module")
def real_triton(artifacts_dir, tmp_path_factory):
    """The Triton Inference Server bundled in nvidia-pytriton (own venv), serving the classifier's logits as
    model "bench" through benchmarks/serving_peer_pytriton.py."""
    if not PYTRITON_PYTHON.exists():
        pytest.skip("tools/venv-pytriton is not installed (see benchmarks/serving_peer_pytriton.py)")
    libdir = subprocess.run([str(PYTRITON_PYTHON), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    home = tmp_path_factory.mktemp("pytriton")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(PYTRITON_PYTHON), str(REPO_ROOT / "benchmarks" / "serving_peer_pytriton.py"),
               str(artifacts_dir / "classifier.onnx"), str(port), "1", "8", "2000"]
    env = {"LD_LIBRARY_PATH": libdir, "PYTRITON_HOME": str(home), "PYTHONPATH": ""}
    with running_process(command, f"{url}/v2/models/bench/ready", home / "triton.log", env=env, timeout_s=120):
        yield url


def test_remote_backend_against_a_real_triton_server(server, real_triton, artifacts_dir, tmp_path) -> None:
    proxy = start_server(tmp_path, {"models": [
        {"name": "triton-digits", "backend": "triton", "max_batch_size": 8,
         "artifact": str(artifacts_dir / "classifier.onnx"),  # the model description (Triton has no paca.*)
         "options": {"url": real_triton, "model": "bench"}}]})
    try:
        payloads = [images.png(1000 + i, (60 + 5 * i, 45)) for i in range(8)]
        local = asyncio.run(_post_all(server.url, f"/v1/models/{CLASSIFIER}/classify", payloads, k=5))
        remote = asyncio.run(_post_all(proxy.url, "/v1/models/triton-digits/classify", payloads, k=5))
        for a, b in zip(local, remote, strict=True):
            assert b.status_code == 200, b.text
            top_a, top_b = a.json()["results"][0]["top_k"], b.json()["results"][0]["top_k"]
            assert [t["index"] for t in top_a] == [t["index"] for t in top_b]
            np.testing.assert_allclose([t["score"] for t in top_a], [t["score"] for t in top_b], atol=1e-5)
        stats = httpx.get(f"{real_triton}/v2/models/bench/stats").json()["model_stats"][0]
        assert int(stats["inference_count"]) >= len(payloads)
    finally:
        stop_server(proxy)
