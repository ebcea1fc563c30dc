"""Soak: mixed load for minutes, watching for leaks and slowdowns.

Closed-loop clients send a fixed mix (classify, detect, segment, explain over REST; classify over v2 with
binary tensors) to the demo models for `--minutes`. Every `--window` seconds the script records the
server's RSS and the median latency of each kind. It reports RSS growth (last window vs the first after
warm-up) and p50 drift (last window vs first); goals: RSS growth < 5 %, p50 drift < 10 %. The clients use
aiohttp (loadtest/http_load.py), with every body encoded once up front, so the client's own CPU stays small
next to the server's. Loopback only.

    .venv/bin/python benchmarks/soak.py --minutes 10 --json soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import aiohttp
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.overload import repository, rss_mib  # noqa: E402
from loadtest import http_load  # noqa: E402
from loadtest.workload import multipart_upload  # noqa: E402
from tests.support.server import exit_cleanly_on_sigterm, running_server  # noqa: E402

IMAGES = REPO_ROOT / "loadtest" / "images"


def requests_mix() -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(kind, path, body, headers): what each client cycles through; REST images as multipart uploads."""
    digit = (IMAGES / "digit_07_label7.png").read_bytes()
    scene = (IMAGES / "scene_00.png").read_bytes()
    pixels = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype("<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "pixel_values", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(pixels)}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    def upload(filename: str, data: bytes) -> tuple[bytes, dict[str, str]]:
        body, content_type = multipart_upload("image", filename, data, "image/png")
        return body, {"Content-Type": content_type}

    v2_headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return [
        ("classify", "/v1/models/demo-digits-classifier/classify", *upload("d.png", digit)),
        ("v2", "/v2/models/demo-digits-classifier/infer", header + pixels, v2_headers),
        ("detect", "/v1/models/demo-digits-detector/detect", *upload("s.png", scene)),
        ("segment", "/v1/models/demo-digits-segmenter/segment", *upload("s.png", scene)),
        ("explain", "/v1/models/demo-digits-classifier/explain", *upload("d.png", digit)),
    ]


async def soak(url: str, pid: int, minutes: float, window_s: float, concurrency: int) -> dict[str, object]:
    mix = requests_mix()
    windows: list[dict[str, object]] = []
    current: dict[str, list[float]] = defaultdict(list)
    failures: dict[str, int] = defaultdict(int)
    stop_at = time.monotonic() + minutes * 60

    async def client_loop(session: aiohttp.ClientSession, offset: int) -> None:
        index = offset
        while time.monotonic() < stop_at:
            kind, path, body, headers = mix[index % len(mix)]
            index += 1
            started = time.perf_counter()
            async with session.post(http_load.path(path), data=body, headers=headers) as response:
                await response.read()
            if response.status != 200:
                failures[f"{kind} {response.status}"] += 1
                continue
            current[kind].append((time.perf_counter() - started) * 1000)

    async def sampler() -> None:
        nonlocal current
        while time.monotonic() < stop_at:
            await asyncio.sleep(window_s)
            closed, current = current, defaultdict(list)
            windows.append({"rss_mib": round(rss_mib(pid), 1),
                            "p50_ms": {kind: round(statistics.median(v), 2) for kind, v in closed.items() if v},
                            "requests": sum(len(v) for v in closed.values())})
            print(json.dumps(windows[-1]), flush=True)

    async with http_load.load_session(url, concurrency, 120) as session:
        await asyncio.gather(sampler(), *(client_loop(session, i) for i in range(concurrency)))
    first, last = windows[0], windows[-1]
    drift = {kind: round(100 * (last["p50_ms"][kind] / first["p50_ms"][kind] - 1), 1)
             for kind in first["p50_ms"] if kind in last["p50_ms"]}
    return {"windows": windows, "failures": dict(failures),
            "rss_growth_percent": round(100 * (last["rss_mib"] / first["rss_mib"] - 1), 2),
            "p50_drift_percent": drift, "requests": sum(w["requests"] for w in windows)}


def main(argv: list[str] | None = None) -> int:
    exit_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=60.0, help="seconds per measurement window")
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), repository()) as server:
        result = asyncio.run(soak(server.url, server.process.pid, args.minutes, args.window, args.concurrency))
    print(json.dumps({k: v for k, v in result.items() if k != "windows"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if not result["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
