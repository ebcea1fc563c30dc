"""A real server process on a loopback port, serving real ONNX artifacts, for the integration tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.integration import fixture_models

CLASSIFIER, SEGMENTER, DETECTOR = "paca-digits", "tiny-seg", "tiny-det"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three test artifacts. PACA_TEST_ARTIFACTS=<dir> keeps them between local runs."""
    cache = os.environ.get("PACA_TEST_ARTIFACTS")
    folder = Path(cache) if cache else tmp_path_factory.mktemp("artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    for name, make in (("classifier.onnx", fixture_models.export_paca_classifier),
                       ("segmenter.onnx", fixture_models.export_tiny_segmenter),
                       ("detector.onnx", fixture_models.export_tiny_detector)):
        if not (folder / name).exists() or (name == "classifier.onnx" and not (folder / "classifier.safetensors")
                                             .exists()):
            partial = folder / f"partial-{name}"
            make(partial)
            partial.rename(folder / name)
    return folder


def repository_dict(artifacts: Path, **overrides: dict) -> dict:
    models = [
        {"name": CLASSIFIER, "artifact": str(artifacts / "classifier.onnx"), "max_batch_size": 8,
         "batching": {"max_queue_delay_ms": 20, "max_queue_size": 64, "queue_timeout_ms": 60000}},
        {"name": SEGMENTER, "artifact": str(artifacts / "segmenter.onnx"), "max_batch_size": 4, "instances": 2,
         "batching": {"max_queue_delay_ms": 20, "max_queue_size": 64, "queue_timeout_ms": 60000},
         "warmup": {"image_sizes": [[120, 160]]}},
        {"name": DETECTOR, "artifact": str(artifacts / "detector.onnx"), "max_batch_size": 1,
         "batching": {"max_queue_delay_ms": 0, "max_queue_size": 64, "queue_timeout_ms": 60000},
         "warmup": {"image_sizes": [[120, 160]]}},
    ]
    for model in models:
        model.update(overrides.get(model["name"], {}))
    return {"models": models}


@dataclass
class ServerProcess:
    process: subprocess.Popen
    url: str
    grpc_port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(tmp: Path, repository: dict, *, grpc: bool = False, env: dict | None = None,
                 wait_ready: bool = True) -> ServerProcess:
    config = tmp / "repository.yaml"
    config.write_text(yaml.safe_dump(repository))
    port, grpc_port = free_port(), (free_port() if grpc else 0)
    log_path = tmp / f"server-{port}.log"
    command = [sys.executable, "-c", "from service.cli import main; main()", "serve", "--config", str(config),
               "--port", str(port), "--grpc-port", str(grpc_port)]
    process_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=process_env)
    server = ServerProcess(process, f"http://127.0.0.1:{port}", grpc_port, log_path)
    if wait_ready:
        wait_until_ready(server)
    return server


def wait_until_ready(server: ServerProcess, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"server not ready after {timeout_s} s:\n{server.log()}")


def stop_server(server: ServerProcess, timeout_s: float = 30.0) -> int:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode


@pytest.fixture(scope="session")
def server(artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared server: the three models, gRPC on, default settings otherwise."""
    tmp = tmp_path_factory.mktemp("server")
    process = start_server(tmp, repository_dict(artifacts_dir), grpc=True)
    yield process
    stop_server(process)


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


TOOLS_PYTHON = REPO_ROOT / ".venv-tools" / "bin" / "python"


def tools_python() -> Path:
    """The tools venv's interpreter (tritonclient lives there only); skip when it is not installed."""
    if not TOOLS_PYTHON.exists():
        pytest.skip(".venv-tools is not installed (make tools)")
    probe = subprocess.run([str(TOOLS_PYTHON), "-c", "import tritonclient.http, tritonclient.grpc"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("tritonclient is not installed in .venv-tools")
    return TOOLS_PYTHON


def perf_analyzer_path() -> Path | None:
    candidate = REPO_ROOT / "tools" / "bin" / "perf_analyzer"  # wrapper that sets LD_LIBRARY_PATH
    return candidate if candidate.exists() else (Path(p) if (p := shutil.which("perf_analyzer")) else None)
