"""Serving overhead, side by side in one run on one ONNX file: raw ONNX Runtime, PaCa Serve, a naive peer.

    .venv/bin/python benchmarks/serving_compare.py --arch pacavit_tiny_p2cconv_100_0 --seconds 10

1. raw: ONNX Runtime in this process, batch 1 back to back (and batch 8), the ceiling any server can reach;
2. paca-serve: `paca serve` (dynamic batcher, KServe v2 binary tensors over HTTP) driven by a closed-loop
   client at concurrency 1, 4 and 16;
3. peers, same client: FastAPI around the same ORT session without batching (benchmarks/serving_peer_fastapi.py)
   and, if tools/venv-pytriton exists, Triton Inference Server via PyTriton with its dynamic batcher set like ours
   (benchmarks/serving_peer_pytriton.py) over the same v2 binary request.

All three use the same file, the same tensor, the same intra-op threads and ORT thread spinning off
(environment.md §14: spinning makes sustained load on these machines fall into slow phases). The client runs in
this process (httpx, asyncio) and shares the CPU with the server, as it would on one machine; compare the
ratios, not the absolute numbers, and only within one run (shared machines drift ±15 %). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.server import free_port, running_process  # noqa: E402

CACHE = REPO_ROOT / "artifacts" / "bench"


@dataclass(frozen=True)
class Measurement:
    system: str
    concurrency: int
    images: int
    seconds: float
    latencies_ms: list[float]

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def ensure_onnx(arch: str | None, onnx: Path | None) -> Path:
    if onnx is not None:
        return onnx
    assert arch is not None
    path = CACHE / f"{arch}.onnx"
    if not path.exists():
        from export.onnx_export import export_onnx

        print(f"exporting {arch} (random weights) to {path} ...", flush=True)
        export_onnx(arch, path)
    return path


def session_for(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def input_tensor(session: ort.InferenceSession, batch: int) -> np.ndarray:
    shape = [batch, *(d if isinstance(d, int) else 224 for d in session.get_inputs()[0].shape[1:])]
    return np.random.default_rng(0).standard_normal(shape, dtype=np.float32)


def measure_raw(session: ort.InferenceSession, batch: int, seconds: float) -> Measurement:
    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name
    tensor = input_tensor(session, batch)
    for _ in range(3):
        session.run([output], {name: tensor})
    latencies, images, start = [], 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        session.run([output], {name: tensor})
        latencies.append((time.perf_counter() - t0) * 1000)
        images += batch
    return Measurement(f"raw ORT batch {batch}", 1, images, time.perf_counter() - start, latencies)


async def closed_loop(
    send: Callable[[httpx.AsyncClient], object], concurrency: int, seconds: float, label: str
) -> Measurement:
    """`concurrency` clients, each sending its next request as soon as the previous answered."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        for _ in range(2):
            await send(client)  # warm connections
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                await send(client)
                latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Measurement(label, concurrency, len(latencies), time.perf_counter() - start, latencies)


def v2_sender(url: str, model: str, input_name: str, output_name: str, tensor: np.ndarray):
    raw = tensor.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": input_name,
                    "datatype": "FP32",
                    "shape": list(tensor.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": output_name, "parameters": {"binary_data": True}}],
        }
    ).encode()
    body = header + raw
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}

    async def send(client: httpx.AsyncClient) -> None:
        response = await client.post(f"{url}/v2/models/{model}/infer", content=body, headers=headers)
        response.raise_for_status()

    return send


def peer_sender(url: str, tensor: np.ndarray):
    raw = tensor.astype("<f4").tobytes()

    async def send(client: httpx.AsyncClient) -> None:
        response = await client.post(f"{url}/infer", content=raw)
        response.raise_for_status()

    return send


def serve_command(
    onnx: Path, model: str, port: int, threads: int, max_batch: int, delay_ms: float, workdir: Path
) -> list[str]:
    repository = workdir / "repository.yaml"
    repository.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": model,
                        "artifact": str(onnx),
                        "max_batch_size": max_batch,
                        "batching": {
                            "max_queue_delay_ms": delay_ms,
                            "max_queue_size": 1024,
                            "queue_timeout_ms": 120000,
                        },
                        "options": {"intra_op_threads": threads, "allow_spinning": False},
                    }
                ]
            }
        )
    )
    args = [
        "paca",
        "serve",
        "--config",
        str(repository),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--grpc-port",
        "0",
        "--log-text",
        "--log-level",
        "warning",
    ]
    return [sys.executable, "-c", f"import sys; from service.cli import main; sys.argv = {args!r}; main()"]


def pytriton_command(args: argparse.Namespace, onnx: Path, port: int, workdir: Path) -> tuple[list[str], dict]:
    """Triton's own dynamic batcher (PyTriton) with the same batch limit and delay as PaCa Serve."""
    libdir = subprocess.run(
        [str(args.pytriton), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    home = workdir / "pytriton-home"
    home.mkdir()
    command = [
        str(args.pytriton),
        str(REPO_ROOT / "benchmarks" / "serving_peer_pytriton.py"),
        str(onnx),
        str(port),
        str(args.threads),
        str(args.max_batch),
        str(int(args.delay_ms * 1000)),
    ]
    return command, {"LD_LIBRARY_PATH": libdir, "PYTRITON_HOME": str(home)}


def merge(parts: list[Measurement]) -> Measurement:
    """One row from the windows of all rounds: total images over total time, all latencies."""
    latencies = [x for p in parts for x in p.latencies_ms]
    return Measurement(
        parts[0].system, parts[0].concurrency, sum(p.images for p in parts), sum(p.seconds for p in parts), latencies
    )


def perf_analyzer_leg(args: argparse.Namespace, targets: list[tuple[str, str]], workdir: Path) -> list[tuple]:
    """The same servers measured by Triton's own C++ client, which costs the shared CPU far less than httpx."""
    spec = importlib.util.spec_from_file_location("loadtest_perf", REPO_ROOT / "loadtest" / "perf_analyzer.py")
    assert spec and spec.loader
    perf = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = perf  # dataclasses look their module up there
    spec.loader.exec_module(perf)
    rows = []
    for index, concurrency in enumerate(args.concurrency):
        for label, url in targets[index % len(targets) :] + targets[: index % len(targets)]:
            (result,) = perf.run_perf_analyzer(
                "bench",
                url,
                [concurrency],
                workdir / "pa",
                binary=args.perf_analyzer,
                request_count=args.pa_requests,
                timeout_s=600,
            )
            rows.append((label, result))
            print(f"perf_analyzer: {label} c={concurrency}: {result.infer_per_s:.1f} infer/s", flush=True)
    return rows


def format_pa_rows(rows: list[tuple]) -> str:
    header = f"{'system':<20} {'conc':>4} {'infer/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'queue ms':>9}"
    lines = [header, "-" * len(header)]
    for label, r in sorted(rows, key=lambda row: (row[1].concurrency, row[0])):
        queue = f"{r.server_queue_ms:>9.2f}" if r.server_queue_ms is not None else f"{'-':>9}"
        lines.append(f"{label:<20} {r.concurrency:>4} {r.infer_per_s:>9.1f} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f} {queue}")
    return "\n".join(lines)


def format_rows(rows: list[Measurement], reference: float) -> str:
    header = f"{'system':<34} {'conc':>4} {'images':>7} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs raw':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.system:<34} {r.concurrency:>4} {r.images:>7} {r.images_per_s:>8.1f} "
            f"{r.percentile(50):>8.1f} {r.percentile(99):>8.1f} {r.images_per_s / reference:>6.2f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--onnx", type=Path, help="an exported ONNX file (classification, fixed input size)")
    source.add_argument(
        "--arch", default="pacavit_tiny_p2cconv_100_0", help="arch to export (cached in artifacts/bench)"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement window per row and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all rows, in rotated order")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads, the same for all systems")
    parser.add_argument("--max-batch", type=int, default=8, help="PaCa Serve max_batch_size")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="max_queue_delay_ms (PaCa Serve and Triton)")
    parser.add_argument(
        "--pytriton",
        type=Path,
        default=REPO_ROOT / "tools" / "venv-pytriton" / "bin" / "python",
        help="Python of a venv with nvidia-pytriton + onnxruntime (peer 2; skipped if absent)",
    )
    parser.add_argument(
        "--perf-analyzer",
        type=Path,
        default=REPO_ROOT / "tools" / "bin" / "perf_analyzer",
        help="also measure the v2 servers with perf_analyzer (skipped if absent)",
    )
    parser.add_argument("--pa-requests", type=int, default=50, help="perf_analyzer requests per count window")
    args = parser.parse_args(argv)

    onnx = ensure_onnx(args.arch if args.onnx is None else None, args.onnx)
    session = session_for(onnx, args.threads)
    tensor = input_tensor(session, 1)
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    print(
        f"model {onnx.name}, input {list(tensor.shape)}, ORT {ort.__version__}, intra-op threads {args.threads}, "
        f"spinning off, {args.rounds} rounds x {args.seconds:.0f} s per row, {os.cpu_count()} CPUs",
        flush=True,
    )

    # Every system is started first; then each round measures all (system, concurrency) pairs in a rotated
    # order, so a slow phase of the shared machine hits every system alike instead of whichever ran then.
    Runner = Callable[[int], Measurement]
    systems: list[tuple[str, list[int], Runner]] = [
        ("raw ORT batch 1", [1], lambda _c: measure_raw(session, 1, args.seconds)),
        (f"raw ORT batch {args.max_batch}", [1], lambda _c: measure_raw(session, args.max_batch, args.seconds)),
    ]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)

        def http_system(label: str, send: Callable) -> tuple[str, list[int], Runner]:
            return label, args.concurrency, lambda c: asyncio.run(closed_loop(send, c, args.seconds, label))

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = serve_command(onnx, "bench", port, args.threads, args.max_batch, args.delay_ms, workdir)
        stack.enter_context(running_process(command, f"{url}/v2/health/ready", workdir / "paca.log"))
        systems.append(
            http_system(
                f"paca-serve v2 (batch<={args.max_batch})", v2_sender(url, "bench", input_name, output_name, tensor)
            )
        )
        v2_targets = [("paca-serve", url)]

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "serving_peer_fastapi.py"),
            str(onnx),
            str(port),
            str(args.threads),
        ]
        stack.enter_context(running_process(command, f"{url}/health", workdir / "peer.log"))
        systems.append(http_system("naive FastAPI + ORT", peer_sender(url, tensor)))

        if args.pytriton.exists():
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            command, env = pytriton_command(args, onnx, port, workdir)
            stack.enter_context(
                running_process(command, f"{url}/v2/models/bench/ready", workdir / "pytriton.log", env=env)
            )
            systems.append(
                http_system(
                    f"Triton (PyTriton) v2 (batch<={args.max_batch})",
                    v2_sender(url, "bench", input_name, output_name, tensor),
                )
            )
            v2_targets.append(("Triton (PyTriton)", url))
        else:
            print(f"(PyTriton peer skipped: {args.pytriton} not found; see benchmarks/serving_peer_pytriton.py)")

        pairs = [(label, c, run) for label, levels, run in systems for c in levels]
        windows: dict[tuple[str, int], list[Measurement]] = {}
        for round_index in range(args.rounds):
            shift = round_index % len(pairs)
            for label, concurrency, run in pairs[shift:] + pairs[:shift]:
                part = run(concurrency)
                windows.setdefault((label, concurrency), []).append(part)
                print(
                    f"round {round_index + 1}/{args.rounds}: {label} c={concurrency}: {part.images_per_s:.1f} img/s",
                    flush=True,
                )
        pa_rows = perf_analyzer_leg(args, v2_targets, workdir) if args.perf_analyzer.exists() else []
    rows = [merge(windows[(label, c)]) for label, c, _ in pairs]
    reference = rows[0].images_per_s

    print()
    print(format_rows(rows, reference))
    paca = {r.concurrency: r for r in rows if r.system.startswith("paca")}
    peers = {
        name: {r.concurrency: r for r in rows if r.system.startswith(prefix)}
        for name, prefix in (("naive FastAPI", "naive"), ("Triton", "Triton"))
    }
    print()
    raw_p50 = statistics.median(rows[0].latencies_ms)
    for concurrency in args.concurrency:
        ratios = "; ".join(
            f"vs {name} {paca[concurrency].images_per_s / peer[concurrency].images_per_s:.2f}x"
            for name, peer in peers.items()
            if concurrency in peer
        )
        added = paca[concurrency].percentile(50) - raw_p50
        print(
            f"c={concurrency:>2}: paca-serve throughput {ratios}; paca-serve p50 adds {added:.1f} ms over raw batch 1"
        )
    if pa_rows:
        print()
        print("perf_analyzer (C++ client, count windows, zero input) against the v2 servers:")
        print(format_pa_rows(pa_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
