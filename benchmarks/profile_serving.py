"""Where a request's microseconds go: py-spy on a loaded `paca serve`, per protocol, summed into the steps.

The server serves the serving benchmark's tiny classifier (32², under 1 ms of inference per image: the regime where the
serving stack's own cost decides throughput, as PaCa-Tiny on a GPU) with the serving benchmark's settings
(max batch 8, 2 ms delay, 1 intra-op thread). For each protocol — KServe v2 over HTTP with binary tensors and
over gRPC (perf_analyzer, C++ client), and REST classify of a real PNG (an aiohttp closed loop) — it loads the
server at `--concurrency`, then for `--seconds` records py-spy samples of every non-idle server thread and
the server's CPU time and answered requests. Each sample is assigned to the step of the request line its
innermost recognised frame belongs to; a step's share of the samples times the CPU time per request is the
step's CPU microseconds per request (an estimate: py-spy sees threads running or waiting for the GIL).

    .venv/bin/python benchmarks/profile_serving.py --output /tmp/profile        # ~1 minute; needs py-spy and
                                                                               # tools/bin/perf_analyzer (make tools)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.serving import DIGIT_IMAGE, Row, closed_loop, paca_command, rest_sender, tiny_model  # noqa: E402
from tests.support.server import PERF_ANALYZER, exit_cleanly_on_sigterm, free_port, running_process  # noqa: E402

MODEL = "tiny"
# (step, what identifies it in a frame "function (file)"); the innermost frame that matches decides.
STEPS: list[tuple[str, tuple[str, ...]]] = [
    ("inference (ONNX Runtime)", ("onnxruntime", "onnxruntime_backend.py")),
    ("batcher (queue, concatenate, split)", ("service/batcher.py",)),
    ("decode + preprocess (Pillow, OpenCV, numpy)", ("service/decode.py", "service/prepare.py", "models/preprocess",
                                                     "PIL/")),
    ("postprocess + encode (task handlers, JSON)", ("service/tasks/", "models/postprocess", "orjson", "json/")),
    ("v2 codec (parse request, build response)", ("service/v2/", "service/api/v2_http.py", "service/api/v2_fast.py")),
    ("gRPC (grpcio, protobuf)", ("grpc/", "grpc_service_pb2", "google/protobuf", "service/api/v2_grpc.py")),
    ("REST routing + admission (FastAPI, ours)", ("fastapi/", "pydantic", "service/api/rest.py",
                                                  "service/api/images.py", "service/runner.py",
                                                  "service/admission.py", "starlette/routing")),
    ("request context, guard, metrics, logs", ("service/request_context.py", "service/guard.py",
                                               "service/metrics.py", "service/logging_setup.py", "service/timing.py",
                                               "prometheus_client", "logging/")),
    ("HTTP server (uvicorn, httptools)", ("uvicorn/", "httptools", "starlette/", "h11")),
    ("asyncio event loop", ("asyncio/", "uvloop", "concurrent/futures", "threading.py")),
]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def answered(url: str) -> int:
    stats = httpx.get(f"{url}/v2/models/{MODEL}/stats", timeout=10).json()["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"])


def step_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for step, markers in STEPS:
            if any(marker in frame for marker in markers):
                return step
    return "other"


def summarise(raw: Path) -> tuple[collections.Counter, collections.Counter]:
    """Samples per step, and per thread kind, from py-spy's raw (collapsed) output."""
    steps: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        steps[step_of(frames[1:])] += int(count)
        name = frames[0].split("(")[-1].rstrip(")") if "(" in frames[0] else frames[0]
        threads[name.strip("\"' ").rstrip("0123456789_-").strip() or "main"] += int(count)
    return steps, threads


def rest_load(url: str, concurrency: int, seconds: float) -> None:
    """A load process: REST classify of a real PNG, closed loop (the serving benchmark's Python client)."""
    send = rest_sender(url, MODEL, DIGIT_IMAGE.read_bytes())
    asyncio.run(closed_loop(send, Row(MODEL, "paca-serve", "python-rest", concurrency), seconds))


def load_command(protocol: str, url: str, grpc_url: str, concurrency: int, seconds: float) -> list[str] | None:
    if protocol == "rest":
        return None
    target = url.removeprefix("http://") if protocol == "http" else grpc_url
    return [str(PERF_ANALYZER), "-m", MODEL, "-u", target, "-i", protocol, "--concurrency-range",
            f"{concurrency}:{concurrency}", "--measurement-mode", "time_windows", "--measurement-interval",
            str(int(seconds * 1000)), "--max-trials", "3", "-s", "100"]


def profile(protocol: str, server_pid: int, url: str, grpc_url: str, args: argparse.Namespace,
            workdir: Path) -> dict[str, object]:
    command = load_command(protocol, url, grpc_url, args.concurrency, args.seconds + 6)
    load: subprocess.Popen | multiprocessing.Process
    if command is not None:
        load = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        load = multiprocessing.get_context("spawn").Process(target=rest_load,
                                                            args=(url, args.concurrency, args.seconds + 6))
        load.start()
    try:
        time.sleep(3)  # warm: the load reaches its steady state
        raw = workdir / f"{protocol}.txt"
        cpu_before, answered_before, started = cpu_seconds(server_pid), answered(url), time.monotonic()
        subprocess.run([args.py_spy, "record", "--format", "raw", "--threads", "--nonblocking", "--rate", "200",
                        "--duration", str(int(args.seconds)), "--pid", str(server_pid), "--output", str(raw)],
                       check=True, capture_output=True, timeout=args.seconds + 60)
        elapsed = time.monotonic() - started
        cpu, requests = cpu_seconds(server_pid) - cpu_before, answered(url) - answered_before
    finally:
        load.terminate()
        if isinstance(load, subprocess.Popen):
            with contextlib.suppress(subprocess.TimeoutExpired):
                load.wait(30)
        else:
            load.join(30)
    steps, threads = summarise(raw)
    total = sum(steps.values()) or 1
    cpu_per_request_us = cpu / max(requests, 1) * 1e6
    return {"protocol": protocol, "requests_per_s": round(requests / elapsed, 1), "cpu_cores": round(cpu / elapsed, 2),
            "cpu_us_per_request": round(cpu_per_request_us),
            "steps_us_per_request": {step: round(cpu_per_request_us * count / total)
                                     for step, count in steps.most_common()},
            "threads_share": {name: round(count / total, 3) for name, count in threads.most_common(6)}}


def markdown(results: list[dict[str, object]]) -> str:
    protocols = [r["protocol"] for r in results]
    names = {"http": "v2 HTTP (binary)", "grpc": "v2 gRPC", "rest": "REST classify (PNG)"}
    lines = ["| µs of server CPU per request | " + " | ".join(names[p] for p in protocols) + " |",
             "|---|" + "---:|" * len(protocols)]
    for label, key in (("answered requests/s", "requests_per_s"), ("server CPU (cores)", "cpu_cores"),
                       ("**CPU per request**", "cpu_us_per_request")):
        lines.append(f"| {label} | " + " | ".join(str(r[key]) for r in results) + " |")
    for step in [s for s, _ in STEPS] + ["other"]:
        values = [r["steps_us_per_request"].get(step) for r in results]  # type: ignore[union-attr]
        if any(values):
            lines.append(f"| {step} | " + " | ".join(str(v or 0) for v in values) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    exit_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="folder for profile.json, profile.md, raw stacks")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="sampling time per protocol")
    parser.add_argument("--protocols", nargs="+", default=["http", "grpc", "rest"], choices=["http", "grpc", "rest"])
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or str(REPO_ROOT / ".venv-tools" / "bin" / "py-spy"))
    args = parser.parse_args(argv)
    if not Path(args.py_spy).exists():
        raise SystemExit("py-spy is needed (make tools installs it into .venv-tools)")
    if not PERF_ANALYZER.exists() and set(args.protocols) - {"rest"}:
        raise SystemExit(f"{PERF_ANALYZER} is missing: make tools")
    artifact = tiny_model()
    args.output.mkdir(parents=True, exist_ok=True)
    settings = argparse.Namespace(max_batch=8, delay_ms=2.0, model_threads={MODEL: 1})
    results = []
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        port, grpc_port = free_port(), free_port()
        url = f"http://127.0.0.1:{port}"
        command = paca_command({MODEL: artifact}, port, grpc_port, settings, "adaptive", workdir)
        with running_process(command, f"{url}/v2/health/ready", workdir / "server.log") as server:
            for protocol in args.protocols:
                result = profile(protocol, server.pid, url, f"127.0.0.1:{grpc_port}", args, args.output)
                print(json.dumps(result), flush=True)
                results.append(result)
    (args.output / "profile.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.output / "profile.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
