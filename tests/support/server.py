"""A real `paca serve` process on free loopback ports: start it, wait for readiness, stop it.

One harness for every test and benchmark that needs a running server. `block_torch=True` makes torch
unimportable in the server process, which proves the serving path needs no torch (the CPU image).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from tests.support.paths import REPO_ROOT

TOOLS_PYTHON = REPO_ROOT / ".venv-tools" / "bin" / "python"
LOCUST = REPO_ROOT / ".venv-tools" / "bin" / "locust"
PERF_ANALYZER = REPO_ROOT / "tools" / "bin" / "perf_analyzer"  # wrapper that sets LD_LIBRARY_PATH
READY_TIMEOUT_S = 120.0


_started: list[subprocess.Popen] = []


@atexit.register
def _stop_leftovers() -> None:
    """A test that failed before stopping its server must not leave it running (and eating CPU) after pytest."""
    for process in _started:
        stop_process(process, timeout_s=5)


def exit_cleanly_on_sigterm() -> None:
    """For benchmark scripts: SIGTERM (a `timeout`, a CI cancel) unwinds like an exception, so every server and
    peer they started is stopped (by their context managers, or `_stop_leftovers` at exit)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    url: str
    grpc_port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(tmp: Path, repository: dict | Path, *, grpc: bool = False, env: dict | None = None,
                 wait_ready: bool = True, block_torch: bool = False, extra_args: tuple[str, ...] = (),
                 ready_timeout_s: float = READY_TIMEOUT_S) -> ServerProcess:
    """`paca serve` on `repository` (a dict written to YAML, or a YAML path), logging to a file in `tmp`."""
    if isinstance(repository, Path):
        config = repository
    else:
        config = tmp / "repository.yaml"
        config.write_text(yaml.safe_dump(repository))
    port, grpc_port = free_port(), (free_port() if grpc else 0)
    log_path = tmp / f"server-{port}.log"
    block = "import sys; sys.modules['torch'] = None; " if block_torch else "import sys; "
    launcher = block + "from service.cli import main; sys.argv[0] = 'paca'; main()"
    command = [sys.executable, "-c", launcher, "serve", "--config", str(config), "--port", str(port),
               "--grpc-port", str(grpc_port), *extra_args]
    process_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=process_env, start_new_session=True)
    _started.append(process)
    server = ServerProcess(process, f"http://127.0.0.1:{port}", grpc_port, log_path)
    if wait_ready:
        wait_until_ready(server, ready_timeout_s)
    return server


def wait_until_ready(server: ServerProcess, timeout_s: float = READY_TIMEOUT_S) -> None:
    try:
        wait_for_url(server.process, f"{server.url}/v2/health/ready", server.log_path, timeout_s)
    except RuntimeError:
        stop_server(server)
        raise


def wait_for_url(process: subprocess.Popen, ready_url: str, log_path: Path, timeout_s: float) -> None:
    """Poll `ready_url` until it answers 200; fail with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-5000:]
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode}:\n{tail}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout_s} s:\n{log_path.read_text(errors='replace')[-5000:]}")


def stop_process(process: subprocess.Popen, timeout_s: float = 30.0) -> int:
    """SIGTERM, then SIGKILL after `timeout_s`; whatever the process started in its session (a peer's worker
    processes) is killed with it, so nothing outlives a test or benchmark."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # the process led its own session (start_new_session)
    return process.returncode


def stop_server(server: ServerProcess, timeout_s: float = 30.0) -> int:
    return stop_process(server.process, timeout_s)


@contextmanager
def running_process(command: list[str], ready_url: str, log_path: Path, *, env: dict[str, str] | None = None,
                    timeout_s: float = 180.0) -> Iterator[subprocess.Popen]:
    """Any HTTP server process (a peer such as PyTriton or a plain FastAPI app), up until `ready_url` is 200."""
    process_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=process_env, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    _started.append(process)
    try:
        wait_for_url(process, ready_url, log_path, timeout_s)
        yield process
    finally:
        stop_process(process)


@contextmanager
def running_server(tmp: Path, repository: dict | Path, **options: object) -> Iterator[ServerProcess]:
    server = start_server(tmp, repository, **options)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        stop_server(server)


def tools_python() -> Path | None:
    """The tools venv's interpreter when tritonclient is installed there (it lives nowhere else)."""
    if not TOOLS_PYTHON.exists():
        return None
    probe = subprocess.run([str(TOOLS_PYTHON), "-c", "import tritonclient.http, tritonclient.grpc"],
                           capture_output=True)
    return TOOLS_PYTHON if probe.returncode == 0 else None


def perf_analyzer_path() -> Path | None:
    if PERF_ANALYZER.exists():
        return PERF_ANALYZER
    found = shutil.which("perf_analyzer")
    return Path(found) if found else None


@contextmanager
def serving_in_process(app: object, timeout_s: float = READY_TIMEOUT_S) -> Iterator[str]:
    """`app` on a loopback port in a thread of this process (for tests that inspect in-process state, such as
    spans in an in-memory exporter); yields its URL once /v2/health/ready is 200."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None,
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="in-process-server", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.config.port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"in-process server at {url} did not become ready")
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
