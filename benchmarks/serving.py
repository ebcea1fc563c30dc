"""`paca bench serving`: what serving costs, side by side in one run — PaCa Serve vs the raw backend vs peers.

On the same ONNX files, with the same intra-op threads per model (1 for the tiny model, 2 — the machine's
cores — for PaCa-Tiny), ORT spinning off, max batch 8 and a 2 ms batch delay:
- raw: ONNX Runtime in this process, batch 1 and batch 8 back to back — the ceiling;
- paca-serve (adaptive batching, the default) and paca-serve with `policy: delay` (Triton's batching);
- Triton Inference Server through PyTriton (its dynamic batcher; needs tools/venv-pytriton, `make tools`);
- LitServe with its batching (`litserve` in .venv);
- a naive FastAPI app, one ORT call per request, no batcher.
Two models: a tiny PaCa-ViT digit classifier (32×32, well under 1 ms per image: serving overhead dominates, the
regime of a GPU) and PaCa-Tiny at 224² (random weights; tens of ms per image). The v2 servers are driven by
perf_analyzer over HTTP and gRPC (binary tensors) for the tiny model; every server by one Python client
(closed loop, aiohttp — a fraction of httpx's CPU per request — with bodies encoded once) for both models.
The REST image path is measured at c=1 with a real PNG: its latency minus the phases the server reports in
`Server-Timing` (decode, preprocess, queue, inference, postprocess) is the request line's own overhead.
Every (system, leg, concurrency) runs in each round in a rotated order, so a slow phase of a shared machine
hits all alike; figures are merged over rounds.

Writes serving.json (every row), serving.md (the tables and the goals) and serving.png (throughput and p99
vs concurrency). Loopback only.

    .venv/bin/paca bench serving --output bench-out            # full (~25 min on 2 cores)
    .venv/bin/paca bench serving --smoke --output /tmp/smoke   # seconds: checks that it produces its outputs
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import onnxruntime as ort
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from loadtest import http_load  # noqa: E402
from loadtest.workload import multipart_upload  # noqa: E402
from tests.support.server import PERF_ANALYZER, exit_cleanly_on_sigterm, free_port, running_process  # noqa: E402

CACHE = REPO_ROOT / "artifacts" / "bench"
PYTRITON = REPO_ROOT / "tools" / "venv-pytriton" / "bin" / "python"
DIGIT_IMAGE = REPO_ROOT / "loadtest" / "images" / "digit_07_label7.png"
DEFAULT_THREADS = {"tiny": 1, "paca-tiny": 2}


@dataclass
class Row:
    model: str
    system: str
    leg: str  # python-v2, python-rest, python-peer, perf_analyzer-http, perf_analyzer-grpc, raw
    concurrency: int
    requests: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    overhead_ms: list[float] = field(default_factory=list, repr=False)  # REST image path only

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> dict[str, object]:
        data = {k: v for k, v in asdict(self).items() if k not in ("latencies_ms", "overhead_ms")}
        data.update(per_s=round(self.per_s, 1), p50_ms=round(self.percentile(50), 2),
                    p99_ms=round(self.percentile(99), 2))
        if self.overhead_ms:
            data["overhead_p50_ms"] = round(statistics.median(self.overhead_ms), 2)
        return data


# ----------------------------------------------------------------------------------------------- models
def tiny_model() -> Path:
    """The tiny PaCa-ViT digit classifier (`tiny_digits_cls`: the first demo configuration at 32², random
    weights, speed does not depend on them): well under 1 ms per image on one core, so the serving stack's own
    cost decides throughput. Fixed, unlike the demo models, which may grow."""
    path = CACHE / "tiny-classifier-32.onnx"
    if not path.exists():
        from export import export_onnx

        print(f"exporting the tiny classifier (random weights) to {path} ...", flush=True)
        export_onnx("tiny_digits_cls", path)
    return path


def paca_tiny_model() -> Path:
    path = CACHE / "pacavit_tiny_p2cconv_100_0.onnx"
    if not path.exists():
        from export import export_onnx

        print(f"exporting PaCa-Tiny (random weights) to {path} ...", flush=True)
        export_onnx("pacavit_tiny_p2cconv_100_0", path)
    return path


def session_for(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def sample(session: ort.InferenceSession, batch: int = 1) -> np.ndarray:
    shape = [batch, *(d if isinstance(d, int) else 224 for d in session.get_inputs()[0].shape[1:])]
    return np.random.default_rng(0).standard_normal(shape, dtype=np.float32)


# ----------------------------------------------------------------------------------------------- legs
def measure_raw(session: ort.InferenceSession, model: str, batch: int, seconds: float) -> Row:
    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name
    tensor = sample(session, batch)
    for _ in range(3):
        session.run([output], {name: tensor})
    row = Row(model, f"raw ORT batch {batch}", "raw", 1)
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        session.run([output], {name: tensor})
        row.latencies_ms.append((time.perf_counter() - t0) * 1000)
        row.requests += batch
    row.seconds = time.perf_counter() - started
    return row


Sender = Callable[[aiohttp.ClientSession], Awaitable[float | None]]  # returns the REST overhead, if it has one


async def closed_loop(send: Sender, row: Row, seconds: float) -> Row:
    """`row.concurrency` clients, each sending its next request as soon as the previous one was answered."""
    async with http_load.load_session(None, row.concurrency, 120) as client:
        for _ in range(2):
            await send(client)  # warm the connection and the model
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                overhead = await send(client)
                row.latencies_ms.append((time.perf_counter() - t0) * 1000)
                if overhead is not None:
                    row.overhead_ms.append(overhead)

        await asyncio.gather(*(worker() for _ in range(row.concurrency)))
        row.requests = len(row.latencies_ms)
        row.seconds = time.perf_counter() - started
    return row


def v2_sender(url: str, model: str, tensor: np.ndarray, input_name: str, output_name: str) -> Sender:
    raw = tensor.astype("<f4").tobytes()
    header = json.dumps({"inputs": [{"name": input_name, "datatype": "FP32", "shape": list(tensor.shape),
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": output_name, "parameters": {"binary_data": True}}]}).encode()
    body = header + raw
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return _posting(f"{url}/v2/models/{model}/infer", body, headers)


def _posting(url: str, body: bytes, headers: dict[str, str]) -> Sender:
    """POST `body` to `url`, read the whole answer, raise on a non-2xx status (a benchmark must not count it)."""

    async def send(client: aiohttp.ClientSession) -> None:
        async with client.post(url, data=body, headers=headers) as response:
            await response.read()
            response.raise_for_status()

    return send


def rest_sender(url: str, model: str, image: bytes) -> Sender:
    """REST classify of a real PNG; returns the request line's own overhead from `Server-Timing`: the server's
    total minus decode, preprocess, queue, inference and postprocess (HTTP, routing, admission, hand-offs,
    encoding). The client's own time is not in it (a Python client on this machine adds milliseconds)."""
    phases = ("decode", "preprocess", "queue", "inference", "postprocess")
    target, headers = f"{url}/v1/models/{model}/classify", {"Content-Type": "image/png"}

    async def send(client: aiohttp.ClientSession) -> float:
        async with client.post(target, data=image, headers=headers) as response:
            await response.read()
            response.raise_for_status()
        timing = dict(part.strip().split(";dur=") for part in response.headers["Server-Timing"].split(","))
        return float(timing["total"]) - sum(float(timing[p]) for p in phases if p in timing)

    return send


def naive_sender(url: str, tensor: np.ndarray) -> Sender:
    raw = tensor.astype("<f4").tobytes()
    return _posting(f"{url}/infer", raw, {"Content-Type": "application/octet-stream"})


def litserve_sender(url: str, tensor: np.ndarray) -> Sender:
    body, content_type = multipart_upload("tensor", "t.bin", tensor.astype("<f4").tobytes(), "application/octet-stream")
    return _posting(f"{url}/predict", body, {"Content-Type": content_type})


def perf_analyzer(row: Row, url: str, model: str, protocol: str, requests: int, workdir: Path) -> Row:
    """perf_analyzer (C++ client, count windows, random data) at one concurrency."""
    csv_path = workdir / f"pa-{protocol}-{abs(hash((row.system, row.model, row.concurrency))) % 10**8}.csv"
    command = [str(PERF_ANALYZER), "-m", model, "-u", url, "-i", protocol, "--concurrency-range",
               f"{row.concurrency}:{row.concurrency}", "--measurement-mode", "count_windows",
               "--measurement-request-count", str(requests), "--max-trials", "5", "-s", "100", "-f", str(csv_path)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed for {row.system}: {result.stdout[-1500:]}{result.stderr[-1500:]}")
    with csv_path.open() as file:
        record = next(csv.DictReader(file))
    per_s = float(record["Inferences/Second"])
    row.seconds = time.perf_counter() - started
    row.requests = int(per_s * row.seconds)
    row.latencies_ms = [float(record["p50 latency"]) / 1000] * 50 + [float(record["p99 latency"]) / 1000]
    return row


# ----------------------------------------------------------------------------------------------- servers
def paca_command(models: dict[str, Path], port: int, grpc_port: int, args: argparse.Namespace, policy: str,
                 workdir: Path) -> list[str]:
    repository = {"models": [
        {"name": name, "artifact": str(path), "max_batch_size": args.max_batch,
         "batching": {"max_queue_delay_ms": args.delay_ms, "max_queue_size": 1024, "queue_timeout_ms": 120000,
                      "policy": policy},
         "options": {"intra_op_threads": args.model_threads[name], "allow_spinning": False}}
        for name, path in models.items()]}
    config = workdir / f"repository-{policy}.yaml"
    config.write_text(yaml.safe_dump(repository))
    return [sys.executable, "-c", "import sys; from service.cli import main; sys.argv[0] = 'paca'; main()", "serve",
            "--config", str(config), "--port", str(port), "--grpc-port", str(grpc_port), "--log-level", "warning"]


@dataclass
class System:
    name: str
    url: str
    legs: dict[str, dict[str, Callable[[int], Row]]]  # model → leg → run(concurrency)


def start_systems(stack: ExitStack, args: argparse.Namespace, models: dict[str, Path], workdir: Path,
                  sessions: dict[str, ort.InferenceSession]) -> list[System]:
    tensors = {name: sample(session) for name, session in sessions.items()}
    names = {name: (session.get_inputs()[0].name, session.get_outputs()[0].name) for name, session in
             sessions.items()}
    seconds, pa_requests = args.seconds, args.pa_requests
    systems = []

    def v2_legs(url: str, grpc_url: str | None, label: str, model_names: dict[str, str]) -> dict:
        legs: dict[str, dict[str, Callable[[int], Row]]] = {}
        for model, served in model_names.items():
            send = v2_sender(url, served, tensors[model], *names[model])
            legs.setdefault(model, {})["python-v2"] = lambda c, m=model, s=send: asyncio.run(
                closed_loop(s, Row(m, label, "python-v2", c), seconds))
            if model == "tiny" and PERF_ANALYZER.exists():
                host = url.removeprefix("http://")
                legs[model]["perf_analyzer-http"] = lambda c, s=served, h=host: perf_analyzer(
                    Row("tiny", label, "perf_analyzer-http", c), h, s, "http", pa_requests, workdir)
                if grpc_url:
                    legs[model]["perf_analyzer-grpc"] = lambda c, s=served: perf_analyzer(
                        Row("tiny", label, "perf_analyzer-grpc", c), grpc_url, s, "grpc", pa_requests, workdir)
        return legs

    for policy in ("adaptive", "delay") if not args.smoke else ("adaptive",):
        port, grpc_port = free_port(), free_port()
        url = f"http://127.0.0.1:{port}"
        stack.enter_context(running_process(paca_command(models, port, grpc_port, args, policy, workdir),
                                            f"{url}/v2/health/ready", workdir / f"paca-{policy}.log"))
        label = "paca-serve" if policy == "adaptive" else "paca-serve (delay)"
        legs = v2_legs(url, f"127.0.0.1:{grpc_port}", label, {m: m for m in models})
        if policy == "adaptive":
            image = DIGIT_IMAGE.read_bytes()
            legs["tiny"]["python-rest"] = lambda c, u=url, i=image: asyncio.run(
                closed_loop(rest_sender(u, "tiny", i), Row("tiny", "paca-serve", "python-rest", c), seconds))
        systems.append(System(label, url, legs))

    if PYTRITON.exists() and not args.no_pytriton:
        libdir = subprocess.run([str(PYTRITON), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                                capture_output=True, text=True, check=True).stdout.strip()
        for model, path in models.items():
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            home = workdir / f"pytriton-{model}"
            home.mkdir()
            command = [str(PYTRITON), str(REPO_ROOT / "benchmarks" / "serving_peer_pytriton.py"), str(path), str(port),
                       str(args.model_threads[model]), str(args.max_batch), str(int(args.delay_ms * 1000))]
            stack.enter_context(running_process(command, f"{url}/v2/models/bench/ready", home / "triton.log",
                                                env={"LD_LIBRARY_PATH": libdir, "PYTRITON_HOME": str(home),
                                                     "PYTHONPATH": ""}))
            legs = v2_legs(url, f"127.0.0.1:{port + 1}", "Triton (PyTriton)", {model: "bench"})
            found = next((s for s in systems if s.name == "Triton (PyTriton)"), None)
            if found is None:
                systems.append(System("Triton (PyTriton)", url, {model: legs[model]}))
            else:
                found.legs[model] = legs[model]

    for label, script, sender, extra in (
        ("LitServe", "serving_peer_litserve.py", litserve_sender, [str(args.max_batch), str(args.delay_ms)]),
        ("naive FastAPI", "serving_peer_fastapi.py", naive_sender, []),
    ):
        if label == "LitServe" and args.smoke:
            continue
        legs = {}
        for model, path in models.items():
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            ready = f"{url}/health"
            command = [sys.executable, str(REPO_ROOT / "benchmarks" / script), str(path), str(port),
                       str(args.model_threads[model]),
                       *extra]
            stack.enter_context(running_process(command, ready, workdir / f"{label}-{model}.log".replace(" ", "-")))
            send = sender(url, tensors[model])
            legs[model] = {"python-peer": lambda c, m=model, s=send, lbl=label: asyncio.run(
                closed_loop(s, Row(m, lbl, "python-peer", c), seconds))}
        systems.append(System(label, "", legs))
    return systems


# ----------------------------------------------------------------------------------------------- report
def merge(parts: list[Row]) -> Row:
    first = parts[0]
    merged = Row(first.model, first.system, first.leg, first.concurrency)
    for part in parts:
        merged.requests += part.requests
        merged.seconds += part.seconds
        merged.latencies_ms += part.latencies_ms
        merged.overhead_ms += part.overhead_ms
    return merged


def find(rows: list[Row], model: str, system: str, leg: str, concurrency: int) -> Row | None:
    return next((r for r in rows if (r.model, r.system, r.leg, r.concurrency) == (model, system, leg, concurrency)),
                None)


def goals(rows: list[Row], args: argparse.Namespace) -> list[tuple[str, str, str, bool | None]]:
    """(figure, measured, goal, met) for the targets of docs/performance.md."""
    out: list[tuple[str, str, str, bool | None]] = []

    def ratio(a: Row | None, b: Row | None) -> float | None:
        return a.per_s / b.per_s if a and b and b.per_s else None

    raw8 = find(rows, "tiny", f"raw ORT batch {args.max_batch}", "raw", 1)
    top = max(args.concurrency)
    value = ratio(find(rows, "tiny", "paca-serve", "perf_analyzer-http", top), raw8)
    out.append((f"tiny model, perf_analyzer HTTP, ours / raw ORT (batch {args.max_batch}) at c={top}",
                f"{value:.2f}" if value else "–", "≥ 0.50", value >= 0.50 if value else None))
    triton = [ratio(find(rows, "tiny", "paca-serve", "perf_analyzer-http", c),
                    find(rows, "tiny", "Triton (PyTriton)", "perf_analyzer-http", c)) for c in args.concurrency]
    shown = " / ".join(f"{t:.2f}" if t else "–" for t in triton)
    levels = ",".join(map(str, args.concurrency))
    out.append((f"tiny model, ours / Triton (PyTriton), perf_analyzer HTTP, at c={levels}", shown, "≥ 1.5",
                all(t >= 1.5 for t in triton) if all(triton) else None))
    p50 = find(rows, "tiny", "paca-serve", "perf_analyzer-http", 1) or find(rows, "tiny", "paca-serve", "python-v2", 1)
    out.append(("tiny model, p50 at c=1", f"{p50.percentile(50):.2f} ms" if p50 else "–", "≤ 2.5 ms",
                p50.percentile(50) <= 2.5 if p50 else None))
    grpc = [ratio(find(rows, "tiny", "paca-serve", "perf_analyzer-grpc", c),
                  find(rows, "tiny", "paca-serve", "perf_analyzer-http", c)) for c in args.concurrency]
    out.append(("tiny model, gRPC / HTTP (ours) at c=" + ",".join(map(str, args.concurrency)),
                " / ".join(f"{g:.2f}" if g else "–" for g in grpc), "≥ 1.0",
                all(g >= 1.0 for g in grpc) if all(grpc) else None))
    raw1 = find(rows, "paca-tiny", "raw ORT batch 1", "raw", 1)
    for c, goal in ((1, 0.95), (top, 0.97)):
        value = ratio(find(rows, "paca-tiny", "paca-serve", "python-v2", c), raw1)
        out.append((f"PaCa-Tiny 224², server / raw ORT at c={c} (tensor path)", f"{value:.2f}" if value else "–",
                    f"≥ {goal}", value >= goal if value else None))
    naive = [ratio(find(rows, "paca-tiny", "paca-serve", "python-v2", c),
                   find(rows, "paca-tiny", "naive FastAPI", "python-peer", c)) for c in args.concurrency]
    out.append(("PaCa-Tiny 224², ours / naive FastAPI at c=" + ",".join(map(str, args.concurrency)),
                " / ".join(f"{n:.2f}" if n else "–" for n in naive), "≥ 1.0",
                all(n >= 1.0 for n in naive) if all(naive) else None))
    rest = find(rows, "tiny", "paca-serve", "python-rest", 1)
    overhead = statistics.median(rest.overhead_ms) if rest and rest.overhead_ms else None
    out.append(("REST image path at c=1: server total − (decode + preprocess + queue + inference + postprocess)",
                f"{overhead:.2f} ms" if overhead is not None else "–", "≤ 2 ms",
                overhead <= 2.0 if overhead is not None else None))
    return out


def markdown(rows: list[Row], args: argparse.Namespace, context: str) -> str:
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {context}", ""]
    for model in ("tiny", "paca-tiny"):
        raw = find(rows, model, "raw ORT batch 1", "raw", 1)
        lines += [f"### {model}", "", "| system | leg | c | req/s | p50 ms | p99 ms | vs raw batch 1 |",
                  "|---|---|---|---|---|---|---|"]
        for row in rows:
            if row.model == model:
                versus = f"{row.per_s / raw.per_s:.2f}" if raw and raw.per_s else "–"
                lines.append(f"| {row.system} | {row.leg} | {row.concurrency} | {row.per_s:.1f} | "
                             f"{row.percentile(50):.2f} | {row.percentile(99):.2f} | {versus} |")
        lines.append("")
    lines += ["### Goals", "", "| figure | measured | goal | met |", "|---|---|---|---|"]
    for figure, measured, goal, met in goals(rows, args):
        lines.append(f"| {figure} | {measured} | {goal} | {'yes' if met else 'no' if met is False else 'n/a'} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    for column, model in enumerate(("tiny", "paca-tiny")):
        series: dict[str, list[Row]] = {}
        for row in rows:
            if row.model == model and row.leg != "raw":
                series.setdefault(f"{row.system} · {row.leg}", []).append(row)
        for label, points in sorted(series.items()):
            points.sort(key=lambda r: r.concurrency)
            x = [r.concurrency for r in points]
            axes[0][column].plot(x, [r.per_s for r in points], marker="o", label=label)
            axes[1][column].plot(x, [r.percentile(99) for r in points], marker="o", label=label)
        for row in rows:
            if row.model == model and row.leg == "raw":
                axes[0][column].axhline(row.per_s, linestyle="--", color="grey", linewidth=1)
                axes[0][column].annotate(row.system, (1, row.per_s), fontsize=7, color="grey")
        axes[0][column].set_title(f"{model}: throughput (requests/s)")
        axes[1][column].set_title(f"{model}: p99 latency (ms)")
        for axis in (axes[0][column], axes[1][column]):
            axis.set_xscale("log", base=2)
            axis.set_xlabel("concurrency")
            axis.grid(alpha=0.3)
        axes[1][column].set_yscale("log")
    axes[0][1].legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    exit_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench-serving", help="folder for the results")
    parser.add_argument("--seconds", type=float, default=4.0, help="window per (system, leg, concurrency) and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, help="ORT intra-op threads for every model and system (default: 1 "
                        "for the tiny model, 2 for PaCa-Tiny)")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--delay-ms", type=float, default=2.0)
    parser.add_argument("--pa-requests", type=int, default=400, help="perf_analyzer requests per count window")
    parser.add_argument("--models", nargs="+", default=["tiny", "paca-tiny"], choices=["tiny", "paca-tiny"])
    parser.add_argument("--no-pytriton", action="store_true", help="leave the PyTriton peer out")
    parser.add_argument("--smoke", action="store_true", help="seconds: tiny model, c=1,2, one round, fewer peers")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.rounds, args.concurrency, args.models = 0.5, 1, [1, 2], ["tiny"]
        args.pa_requests, args.no_pytriton = 50, True
    args.output.mkdir(parents=True, exist_ok=True)
    models = {"tiny": tiny_model, "paca-tiny": paca_tiny_model}
    paths = {name: models[name]() for name in args.models}
    args.model_threads = {name: args.threads or DEFAULT_THREADS[name] for name in paths}
    sessions = {name: session_for(path, args.model_threads[name]) for name, path in paths.items()}
    threads = ", ".join(f"{name} {count}" for name, count in args.model_threads.items())
    context = (f"{os.cpu_count()} CPUs, ORT {ort.__version__}, intra-op threads: {threads}, max batch "
               f"{args.max_batch}, delay {args.delay_ms:g} ms, {args.rounds} round(s) × {args.seconds:g} s")
    print(context, flush=True)
    windows: dict[tuple, list[Row]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        systems = start_systems(stack, args, paths, workdir, sessions)
        pairs: list[tuple[tuple, Callable[[], Row]]] = []
        for model, session in sessions.items():
            for batch in (1, args.max_batch):
                pairs.append(((model, f"raw ORT batch {batch}", "raw", 1),
                              lambda s=session, m=model, b=batch: measure_raw(s, m, b, args.seconds)))
        for system in systems:
            for model, legs in system.legs.items():
                for leg, run in legs.items():
                    for c in args.concurrency:
                        pairs.append(((model, system.name, leg, c), lambda r=run, c=c: r(c)))
        for round_index in range(args.rounds):
            shift = (round_index * 7) % len(pairs)
            for key, run in pairs[shift:] + pairs[:shift]:
                part = run()
                windows.setdefault(key, []).append(part)
                print(f"round {round_index + 1}/{args.rounds}: {' · '.join(map(str, key))}: {part.per_s:.1f}/s "
                      f"p50 {part.percentile(50):.2f} ms", flush=True)
    rows = [merge(windows[key]) for key, _ in pairs]
    (args.output / "serving.json").write_text(json.dumps({"context": context, "rows": [r.summary() for r in rows],
                                                          "goals": goals(rows, args)}, indent=2) + "\n")
    report = markdown(rows, args, context)
    (args.output / "serving.md").write_text(report)
    plot(rows, args.output / "serving.png")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
