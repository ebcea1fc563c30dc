"""Load tools against the real server: locust (REST + KServe v2) and perf_analyzer, on loopback, bounded.

The server runs as `paca serve` in a subprocess with torch made unimportable, which is also the proof that the
CPU Docker image (requirements-serve.txt, no torch) can serve ONNX artifacts. The probes and the metric names
the Kubernetes manifests rely on are checked against this running server too.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.loadtest.conftest import CLASSIFIER, DEMO_ARCHS
from tests.support.paths import REPO_ROOT
from tests.support.server import LOCUST, PERF_ANALYZER, ServerProcess


def _load(name: str) -> ModuleType:
    """The stand-alone scripts as the tools venv runs them: by file, not as package modules."""
    spec = importlib.util.spec_from_file_location(f"loadtest_{name}", REPO_ROOT / "loadtest" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


runner = _load("run")
perf = _load("perf_analyzer")


@pytest.fixture(scope="module")
def running_server(loadtest_server: ServerProcess) -> ServerProcess:
    return loadtest_server


@pytest.fixture(scope="module")
def server(loadtest_server: ServerProcess) -> str:
    return loadtest_server.url


def test_loopback_guard_refuses_other_hosts() -> None:
    for url in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", "http://127.0.0.2"):
        assert runner.require_loopback(url) == url
    for url in ("http://10.0.0.1:8000", "http://example.com", "http://0.0.0.0:8000", "http://192.168.1.5"):
        with pytest.raises(ValueError, match="non-loopback"):
            runner.require_loopback(url)
    with pytest.raises(ValueError, match="users"):
        runner.run_locust("http://127.0.0.1:1", 1000, 5, Path("/nonexistent"))
    with pytest.raises(ValueError, match="non-loopback"):
        perf.build_command(PERF_ANALYZER, "m", "http://10.1.1.1:8000", [1], Path("x.csv"))
    # One perf_analyzer run sweeps start:end:step; other level sets are split into one run per level.
    command = perf.build_command(PERF_ANALYZER, "m", "http://127.0.0.1:8123", [1, 3, 5], Path("x.csv"))
    assert command[command.index("--concurrency-range") + 1] == "1:5:2"
    assert command[command.index("-u") + 1] == "127.0.0.1:8123"
    assert perf.is_arithmetic([1, 2, 3]) and not perf.is_arithmetic([1, 2, 4])


def test_perf_analyzer_wrapper_takes_host_port_like_perf_analyzer_and_grpc() -> None:
    def target(url: str, protocol: str = "http") -> tuple[str, str]:
        command = perf.build_command(PERF_ANALYZER, "m", url, [1], Path("x.csv"), protocol=protocol)
        return command[command.index("-u") + 1], command[command.index("-i") + 1]

    assert target("127.0.0.1:8123") == ("127.0.0.1:8123", "http")  # perf_analyzer's own -u form
    assert target("localhost") == ("localhost:8000", "http")
    assert target("localhost", "grpc") == ("localhost:8001", "grpc")  # gRPC's default port
    assert target("127.0.0.1:9001", "grpc") == ("127.0.0.1:9001", "grpc")
    assert target("http://[::1]:9000", "grpc") == ("[::1]:9000", "grpc")
    with pytest.raises(ValueError, match="non-loopback"):
        target("10.1.1.1:8001", "grpc")
    with pytest.raises(ValueError, match="protocol"):
        target("127.0.0.1:8001", "tcp")


def test_deployment_probes_and_hpa_metrics_exist_on_the_real_server(running_server: ServerProcess) -> None:
    server = running_server.url
    from tests.deploy.test_deploy import K8S, by_kind, render_kustomization, server_container

    container = server_container(by_kind(render_kustomization(K8S / "overlays" / "cpu")))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert httpx.get(f"{server}{path}", timeout=5).status_code == 200, probe
    with open(REPO_ROOT / "loadtest" / "images" / "digit_03_label3.png", "rb") as image:
        response = httpx.post(f"{server}/v1/models/{CLASSIFIER}/classify", files={"image": image}, timeout=30)
    assert response.status_code == 200
    # The gRPC port the Service exposes (8001 in the manifests) is served too, without torch.
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{running_server.grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=20)
    metrics = httpx.get(f"{server}/metrics", timeout=5).text
    # The prometheus-adapter rule and the KEDA query read exactly these series.
    for family in ("nv_inference_queue_duration_us", "nv_inference_request_success"):
        series = [line for line in metrics.splitlines() if line.startswith(family + "{")]
        assert any(f'model="{CLASSIFIER}"' in line for line in series), family


@pytest.mark.skipif(not LOCUST.exists(), reason="locust not installed in .venv-tools (make tools)")
def test_locust_headless_against_rest_and_v2(server: str, tmp_path: Path) -> None:
    stats = runner.run_locust(server, users=2, duration_s=5, out_dir=tmp_path, tasks="classify,detect,segment,v2")
    assert (tmp_path / "locust_stats.csv").exists()
    by_name = {s.name: s for s in stats}
    aggregated = by_name["Aggregated"]
    assert aggregated.requests > 10 and aggregated.failures == 0, (tmp_path / "locust.log").read_text()[-3000:]
    classify = by_name["POST /v1/models/[model]/classify (multipart)"]
    v2 = by_name["POST /v2/models/[model]/infer (binary)"]
    assert classify.requests > 0 and v2.requests > 0
    assert 0 < classify.p50_ms <= classify.p95_ms <= classify.p99_ms
    served = {m["task"] for m in httpx.get(f"{server}/v1/models", timeout=5).json()["models"]}
    if "segmentation" in served:
        assert by_name["POST /v1/models/[model]/segment (json b64)"].requests > 0
    if "detection" in served:
        assert by_name["POST /v1/models/[model]/detect (raw body)"].requests > 0
    table = runner.format_table(stats)
    assert "p99 ms" in table and "Aggregated" in table


@pytest.mark.skipif(not PERF_ANALYZER.exists(), reason="perf_analyzer not installed (make tools)")
def test_perf_analyzer_count_windows_against_v2_with_real_images(server: str, tmp_path: Path) -> None:
    perf_input = _load("perf_input")
    digits = sorted((REPO_ROOT / "loadtest" / "images").glob("digit_*.png"))
    input_data = perf_input.write_input_data(DEMO_ARCHS[CLASSIFIER], digits, tmp_path / "digits.json")
    results = perf.run_perf_analyzer(
        CLASSIFIER, server, [1, 2], tmp_path, request_count=20, input_data=str(input_data), timeout_s=120
    )
    assert [r.concurrency for r in results] == [1, 2]
    for result in results:
        assert result.infer_per_s > 0 and 0 < result.p50_ms <= result.p99_ms
        assert result.server_queue_ms is not None  # /stats is advertised and read: the server-side split
    assert "infer/s" in perf.format_table(CLASSIFIER, results)


@pytest.mark.skipif(not PERF_ANALYZER.exists(), reason="perf_analyzer not installed (make tools)")
def test_perf_analyzer_over_grpc_with_a_host_port_target(running_server: ServerProcess, tmp_path: Path) -> None:
    results = perf.run_perf_analyzer(
        CLASSIFIER, f"127.0.0.1:{running_server.grpc_port}", [1], tmp_path, request_count=20, protocol="grpc",
        timeout_s=120,
    )
    assert [r.concurrency for r in results] == [1]
    assert results[0].infer_per_s > 0 and 0 < results[0].p50_ms <= results[0].p99_ms
    assert results[0].server_queue_ms is not None  # statistics read over gRPC too
