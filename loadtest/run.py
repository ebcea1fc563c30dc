"""Run the locust load test headless, bounded and against loopback only; print p50/p95/p99 and throughput.

    .venv-tools/bin/python loadtest/run.py --host http://127.0.0.1:8000 --users 4 --duration 30

Guards: the target must be a loopback address, users ≤ 64, duration ≤ 600 s, so a typo
can neither load someone else's server nor run unbounded. Locust writes <out>/locust_stats.csv (and the
failures/exceptions CSVs); this script reads it back and prints one row per endpoint plus the aggregate.
The exit status is 1 when any request failed (unless --allow-failures), so CI can use it directly.
Standard library only: run it with any Python; locust itself is taken from .venv-tools (or --locust).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    from loadtest.hosts import require_loopback
except ModuleNotFoundError:  # run as a script from a venv without this project installed (.venv-tools)
    from hosts import require_loopback  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
MAX_USERS = 64
MAX_DURATION_S = 600


@dataclass(frozen=True)
class EndpointStats:
    name: str
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests_per_s: float


def find_locust(explicit: str | None) -> str:
    candidates = [explicit, str(REPO_ROOT / ".venv-tools" / "bin" / "locust"), shutil.which("locust")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise FileNotFoundError("locust not found: run `make tools` (it installs into .venv-tools) or pass --locust")


def read_stats(csv_path: Path) -> list[EndpointStats]:
    """Rows of locust's <prefix>_stats.csv; percentiles in ms, the 'Aggregated' row last."""
    rows = []
    with csv_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append(
                EndpointStats(
                    name=f"{row['Type']} {row['Name']}".strip() if row["Name"] != "Aggregated" else "Aggregated",
                    requests=int(row["Request Count"]),
                    failures=int(row["Failure Count"]),
                    p50_ms=float(row["50%"] or 0),
                    p95_ms=float(row["95%"] or 0),
                    p99_ms=float(row["99%"] or 0),
                    requests_per_s=float(row["Requests/s"] or 0),
                )
            )
    return rows


def format_table(stats: list[EndpointStats]) -> str:
    header = f"{'endpoint':<52} {'requests':>8} {'fail':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8}"
    lines = [header, "-" * len(header)]
    for s in stats:
        lines.append(
            f"{s.name[:52]:<52} {s.requests:>8} {s.failures:>5} {s.p50_ms:>8.1f} {s.p95_ms:>8.1f} "
            f"{s.p99_ms:>8.1f} {s.requests_per_s:>8.1f}"
        )
    return "\n".join(lines)


def run_locust(
    host: str,
    users: int,
    duration_s: int,
    out_dir: Path,
    *,
    spawn_rate: float | None = None,
    tasks: str | None = None,
    locust: str | None = None,
    images: Path | None = None,
) -> list[EndpointStats]:
    """Run locust headless and return its per-endpoint statistics."""
    require_loopback(host)
    if not 1 <= users <= MAX_USERS:
        raise ValueError(f"users must be 1..{MAX_USERS}")
    if not 1 <= duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration must be 1..{MAX_DURATION_S} s")
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / "locust"
    command = [
        find_locust(locust),
        "-f",
        str(HERE / "locustfile.py"),
        "--headless",
        "--only-summary",
        "-u",
        str(users),
        "-r",
        str(spawn_rate or users),
        "-t",
        f"{duration_s}s",
        "--stop-timeout",
        "10",
        "--host",
        host,
        "--csv",
        str(prefix),
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
    ]
    env = dict(os.environ)
    if tasks:
        env["PACA_LOADTEST_TASKS"] = tasks
    if images:
        env["PACA_LOADTEST_IMAGES"] = str(images)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration_s + 120)
    (out_dir / "locust.log").write_text(result.stdout + result.stderr)
    stats_csv = Path(f"{prefix}_stats.csv")
    if result.returncode != 0 or not stats_csv.exists():
        raise RuntimeError(f"locust failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return read_stats(stats_csv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="http://127.0.0.1:8000", help="server URL (loopback only)")
    parser.add_argument("--users", "-u", type=int, default=4, help=f"concurrent users (≤ {MAX_USERS})")
    parser.add_argument("--spawn-rate", "-r", type=float, default=None, help="users started per second")
    parser.add_argument("--duration", "-t", type=int, default=30, help=f"seconds (≤ {MAX_DURATION_S})")
    parser.add_argument("--tasks", default=None, help="subset of classify,detect,segment,v2 (default: all served)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the CSV files")
    parser.add_argument("--images", type=Path, default=None, help="image folder (default loadtest/images)")
    parser.add_argument("--locust", default=None, help="locust executable (default .venv-tools/bin/locust)")
    parser.add_argument("--allow-failures", action="store_true", help="exit 0 even if requests failed")
    args = parser.parse_args(argv)
    try:
        stats = run_locust(
            args.host,
            args.users,
            args.duration,
            args.out,
            spawn_rate=args.spawn_rate,
            tasks=args.tasks,
            locust=args.locust,
            images=args.images,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    print(f"locust: {args.users} users for {args.duration} s against {args.host}; CSV in {args.out}")
    print(format_table(stats))
    failures = sum(s.failures for s in stats if s.name == "Aggregated")
    return 1 if failures and not args.allow_failures else 0


if __name__ == "__main__":
    sys.exit(main())
