"""Run Triton's perf_analyzer against a PaCa Serve model over KServe v2 HTTP or gRPC; print a latency table.

    .venv-tools/bin/python loadtest/perf_analyzer.py -m demo-digits-classifier --concurrency 1 4
    .venv-tools/bin/python loadtest/perf_analyzer.py -m demo-digits-classifier -u 127.0.0.1:8001 -i grpc

The target is `host:port` as perf_analyzer's own `-u` takes it, or a URL (`http://host:port`); without a port,
8000 for HTTP and 8001 for gRPC.

perf_analyzer (installed by scripts/install-perf-analyzer.sh as tools/bin/perf_analyzer) reads the model's
/v2 metadata and /config, then sends binary FP32 tensors to /infer: zeros by default, or real preprocessed
images from a JSON made by loadtest/perf_input.py (its own default, random bytes, decodes to NaN/inf floats,
which the server rejects). Settings that survive a busy 2-core machine: count windows
(a fixed number of requests per measurement instead of a time window) and `--max-trials 5 -s 100`, since the
defaults often end with "Failed to obtain stable measurement" (exit 2). Loopback targets only. Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    from loadtest.hosts import require_loopback, split_target
except ModuleNotFoundError:  # run as a script from a venv without this project installed (.venv-tools)
    from hosts import require_loopback, split_target  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
DEFAULT_BINARY = REPO_ROOT / "tools" / "bin" / "perf_analyzer"
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}


@dataclass(frozen=True)
class ConcurrencyResult:
    concurrency: int
    infer_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    server_queue_ms: float | None


def build_command(
    binary: Path,
    model: str,
    url: str,
    concurrency: list[int],
    csv_path: Path,
    *,
    batch_size: int = 1,
    request_count: int = 50,
    shape: str | None = None,
    input_data: str = "zero",
    protocol: str = "http",
) -> list[str]:
    if protocol not in DEFAULT_PORTS:
        raise ValueError(f"protocol must be http or grpc, got {protocol!r}")
    require_loopback(url)
    host, port = split_target(url)
    port = port or DEFAULT_PORTS[protocol]
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 literals keep their brackets
    levels = sorted(set(concurrency))
    if not is_arithmetic(levels):
        raise ValueError(f"one perf_analyzer run sweeps an arithmetic range only, got {concurrency}")
    low, high = levels[0], levels[-1]
    step = levels[1] - levels[0] if len(levels) > 1 else 1
    command = [
        str(binary),
        "-m",
        model,
        "-u",
        target,
        "-i",
        protocol,
        "-b",
        str(batch_size),
        "--concurrency-range",
        f"{low}:{high}:{step}",
        "--measurement-mode",
        "count_windows",
        "--measurement-request-count",
        str(request_count),
        "--max-trials",
        "5",
        "-s",
        "100",
        "-f",
        str(csv_path),
        "--input-data",
        input_data,
    ]
    if shape:
        command += ["--shape", shape]
    return command


def read_csv(csv_path: Path) -> list[ConcurrencyResult]:
    """perf_analyzer's -f CSV (latencies in µs), sorted by concurrency."""
    results = []
    with csv_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            queue = row.get("Server Queue")
            results.append(
                ConcurrencyResult(
                    concurrency=int(row["Concurrency"]),
                    infer_per_s=float(row["Inferences/Second"]),
                    p50_ms=float(row["p50 latency"]) / 1000,
                    p95_ms=float(row["p95 latency"]) / 1000,
                    p99_ms=float(row["p99 latency"]) / 1000,
                    server_queue_ms=float(queue) / 1000 if queue not in (None, "") else None,
                )
            )
    return sorted(results, key=lambda r: r.concurrency)


def format_table(model: str, results: list[ConcurrencyResult]) -> str:
    header = f"{'model':<28} {'conc':>4} {'infer/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'queue ms':>9}"
    lines = [header, "-" * len(header)]
    for r in results:
        queue = f"{r.server_queue_ms:>9.2f}" if r.server_queue_ms is not None else f"{'-':>9}"
        lines.append(
            f"{model[:28]:<28} {r.concurrency:>4} {r.infer_per_s:>9.1f} {r.p50_ms:>8.2f} {r.p95_ms:>8.2f} "
            f"{r.p99_ms:>8.2f} {queue}"
        )
    return "\n".join(lines)


def run_perf_analyzer(
    model: str,
    url: str,
    concurrency: list[int],
    out_dir: Path,
    *,
    binary: Path = DEFAULT_BINARY,
    batch_size: int = 1,
    request_count: int = 50,
    shape: str | None = None,
    input_data: str = "zero",
    protocol: str = "http",
    timeout_s: float = 300,
) -> list[ConcurrencyResult]:
    if not binary.exists():
        raise FileNotFoundError(f"{binary} not found: run `make tools` (scripts/install-perf-analyzer.sh)")
    out_dir.mkdir(parents=True, exist_ok=True)
    levels = sorted(set(concurrency))
    # perf_analyzer sweeps only arithmetic ranges (start:end:step): other sets run one level per invocation.
    runs = [levels] if is_arithmetic(levels) else [[level] for level in levels]
    results: list[ConcurrencyResult] = []
    for run_levels in runs:
        tag = f"{model}_{protocol}_c{'-'.join(map(str, run_levels))}"
        csv_path = out_dir / f"perf_analyzer_{tag}.csv"
        command = build_command(
            binary,
            model,
            url,
            run_levels,
            csv_path,
            batch_size=batch_size,
            request_count=request_count,
            shape=shape,
            input_data=input_data,
            protocol=protocol,
        )
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        (out_dir / f"perf_analyzer_{tag}.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0 or not csv_path.exists():
            raise RuntimeError(f"perf_analyzer exit {result.returncode}:\n{(result.stdout + result.stderr)[-2000:]}")
        results += read_csv(csv_path)
    return sorted(results, key=lambda r: r.concurrency)


def is_arithmetic(levels: list[int]) -> bool:
    step = levels[1] - levels[0] if len(levels) > 1 else 1
    return step > 0 and levels == list(range(levels[0], levels[-1] + 1, step))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", "-m", required=True)
    parser.add_argument("--url", "-u", default="127.0.0.1:8000",
                        help="server as host:port (perf_analyzer's -u) or http://host:port; loopback only")
    parser.add_argument("--protocol", "-i", choices=("http", "grpc"), default="http",
                        help="KServe v2 over HTTP or gRPC (default port 8000 / 8001)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="levels, e.g. 1 2 4 8")
    parser.add_argument("--batch-size", "-b", type=int, default=1)
    parser.add_argument("--requests", type=int, default=50, help="requests per count window")
    parser.add_argument("--shape", default=None, help="NAME:dims for variable inputs, e.g. pixel_values:3,128,128")
    parser.add_argument(
        "--input-data",
        default="zero",
        help="zero | a JSON from loadtest/perf_input.py (real images); random bytes decode to NaN/inf",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--binary", type=Path, default=DEFAULT_BINARY)
    args = parser.parse_args(argv)
    try:
        results = run_perf_analyzer(
            args.model,
            args.url,
            args.concurrency,
            args.out,
            binary=args.binary,
            batch_size=args.batch_size,
            request_count=args.requests,
            shape=args.shape,
            input_data=args.input_data,
            protocol=args.protocol,
        )
    except (ValueError, FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"perf_analyzer: {exc}", file=sys.stderr)
        return 2
    print(format_table(args.model, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
