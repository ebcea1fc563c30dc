"""`paca loadtest` (sweeps with plots and SLO gates) and `paca bench ...` (benchmark scripts of the checkout).

Nothing heavy at import: httpx, aiohttp, numpy and matplotlib load inside the commands.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

MAX_DURATION_S = 600
MAX_CONCURRENCY = 256
MAX_RATE = 5000
MAX_STEPS = 20
ENDPOINT_CHOICES = ("classify", "detect", "segment", "explain", "v2", "grpc")
CHECKOUT = Path(__file__).resolve().parents[1]

bench_app = typer.Typer(help="Benchmarks (scripts in benchmarks/ of a source checkout).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("loadtest")(loadtest_command)
    app.add_typer(bench_app, name="bench")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"paca loadtest: {message}", err=True)
    return typer.Exit(2)


def _levels(text: str, name: str, kind: type, low: float, high: float) -> tuple[float, ...]:
    try:
        levels = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise _fail(f"{name} {text!r}: expected comma-separated numbers, e.g. 1,4,16") from None
    if not levels or len(levels) > MAX_STEPS:
        raise _fail(f"{name}: give 1 to {MAX_STEPS} levels")
    if any(not low <= level <= high for level in levels):
        raise _fail(f"{name}: every level must be within {low:g}..{high:g}")
    return levels


def loadtest_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for loadtest.json, steps.csv, "
                                         "requests.csv, summary.md and the PNG plots.")],
    url: Annotated[str, typer.Option(help="Server base URL (HTTP port; /metrics is read there too).")] =
        "http://127.0.0.1:8000",
    model: Annotated[str | None, typer.Option(help="Served model (default: the first that fits the "
                                              "endpoint).")] = None,
    endpoint: Annotated[str | None, typer.Option(help="classify | detect | segment | explain (REST forms), v2 "
                                                 "(binary tensors over HTTP) or grpc (default: the model's REST "
                                                 "task endpoint).")] = None,
    duration: Annotated[float, typer.Option(help=f"Seconds per step (≤ {MAX_DURATION_S}).")] = 10.0,
    concurrency: Annotated[str | None, typer.Option(help="Closed-loop sweep: clients per step, e.g. 1,4,16.")] = None,
    rate: Annotated[str | None, typer.Option(help="Open-loop sweep: requests/s per step, e.g. 10,50,100 "
                                             "(arrivals do not wait for answers).")] = None,
    images: Annotated[Path | None, typer.Option(help="Folder of PNG/JPEG files (default: the bundled samples "
                                                "in loadtest/images).")] = None,
    slo: Annotated[list[str] | None, typer.Option(help="Objective, repeatable: 'p99<=200ms@50rps', "
                                                  "'errors<1%', 'throughput>=40rps@16conc'. Exit 1 if one is "
                                                  "missed.")] = None,
    warmup: Annotated[float, typer.Option(help="Unrecorded seconds of the same load before each step.")] = 1.0,
    timeout: Annotated[float, typer.Option(help="Per-request timeout in seconds.")] = 30.0,
    max_in_flight: Annotated[int, typer.Option(help="Open loop: outstanding requests at most; arrivals over it "
                                               "count as client-dropped failures.")] = 512,
    arrivals: Annotated[str, typer.Option(help="Open loop: poisson or uniform inter-arrival times.")] = "poisson",
    seed: Annotated[int, typer.Option(help="Seed of the Poisson schedule.")] = 0,
    grpc_target: Annotated[str | None, typer.Option(help="host:port of the gRPC server (default: the URL's host, "
                                                    "port 8001).")] = None,
    top_k: Annotated[int, typer.Option(help="classify: classes per answer.", min=1)] = 5,
    allow_remote: Annotated[bool, typer.Option(help="Allow a target that is not this machine (only servers you "
                                               "are responsible for).")] = False,
) -> None:
    """Load a running server with real images in a closed-loop (--concurrency) or open-loop (--rate) sweep.

    Per step: throughput, latency p50/p90/p95/p99, errors by status code, and the server's own figures from
    /metrics (queue vs compute time, batch sizes, queue depth). Writes JSON, CSV, PNG plots and summary.md.
    Exit status: 0 when every --slo holds, 1 when one is missed, 2 when the run could not be made.
    """
    from loadtest.hosts import NotLoopbackError, require_loopback, split_target
    from loadtest.slo import SLOError, check_against_sweep, parse_slo

    if (concurrency is None) == (rate is None):
        raise _fail("give exactly one of --concurrency (closed loop) or --rate (open loop)")
    if endpoint is not None and endpoint not in ENDPOINT_CHOICES:
        raise _fail(f"--endpoint {endpoint!r}: choose from {', '.join(ENDPOINT_CHOICES)}")
    if not 0 < duration <= MAX_DURATION_S or not 0 <= warmup <= 60:
        raise _fail(f"--duration must be in (0, {MAX_DURATION_S}] s and --warmup in [0, 60] s")
    if arrivals not in ("poisson", "uniform"):
        raise _fail("--arrivals must be poisson or uniform")
    mode = "concurrency" if concurrency is not None else "rate"
    levels = (_levels(concurrency, "--concurrency", int, 1, MAX_CONCURRENCY) if concurrency is not None
              else _levels(rate, "--rate", float, 0.1, MAX_RATE))
    try:
        objectives = [parse_slo(text) for text in slo or []]
        check_against_sweep(objectives, mode, levels)
    except SLOError as exc:
        raise _fail(str(exc)) from None
    try:
        host, _ = split_target(url)
        grpc_target = grpc_target or (f"[{host}]:8001" if ":" in host else f"{host}:8001")
        require_loopback(url, allow_remote=allow_remote)
        if endpoint == "grpc":
            require_loopback(grpc_target, allow_remote=allow_remote)
    except NotLoopbackError as exc:
        raise _fail(f"{exc}. Load tests stay on this machine unless --allow-remote is given; against a cluster, "
                    f"port-forward first (kubectl port-forward svc/paca-serve 8000:8000)") from None
    except ValueError as exc:
        raise _fail(str(exc)) from None

    import httpx

    from loadtest.sweep import SweepSettings, execute
    from loadtest.workload import WorkloadError, build_workload

    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            workload = build_workload(client, model, endpoint, images, top_k=top_k)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach {url}: {exc}") from None
    except WorkloadError as exc:
        raise _fail(str(exc)) from None
    settings = SweepSettings(url=url, mode=mode, levels=levels, duration_s=duration, warmup_s=warmup,
                             timeout_s=timeout, max_in_flight=max_in_flight, arrivals=arrivals, seed=seed,
                             grpc_target=grpc_target)
    typer.echo(f"loading {workload.model} via {workload.endpoint}: {mode} {', '.join(f'{v:g}' for v in levels)}, "
               f"{duration:g} s per step", err=True)
    run, results = execute(settings, workload, output, objectives,
                           image_source=str(images) if images else "bundled samples")
    typer.echo((output / "summary.md").read_text())
    typer.echo(f"wrote {output}/: loadtest.json, steps.csv, requests.csv, summary.md and 3 plots", err=True)
    if not run["passed"]:
        missed = [f"{r.slo.text} at {r.step} (measured {r.measured:.1f} {r.slo.unit})" for r in results
                  if not r.passed]
        typer.echo(f"SLO missed: {'; '.join(missed)}", err=True)
        raise typer.Exit(1)


@bench_app.command("scaling")
def bench_scaling_command(
    models: Annotated[str | None, typer.Option(help="Comma-separated: paca_tiny, paca_tiny_inline, pvt_v2_b1, "
                                               "swin_tiny, vit_small (default: all).")] = None,
    sizes: Annotated[str, typer.Option(help="Square input sides in px, multiples of 32.")] = "224,448,672,1024",
    rounds: Annotated[int, typer.Option(help="Interleaved timed rounds per size.", min=1)] = 7,
    warmup: Annotated[int, typer.Option(help="Untimed runs per session first.", min=0)] = 2,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads.", min=1)] = 2,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for scaling.json, scaling.md, "
                                         "scaling.png (and the ONNX files in onnx/).")] =
        Path("benchmark-results/scaling"),
) -> None:
    """Latency and peak memory vs resolution on ONNX Runtime CPU: PaCa-Tiny vs timm's PVTv2-b1, Swin-T, ViT-S.

    Runs benchmarks/scaling.py of the source checkout (needs torch and timm: requirements.txt).
    """
    script = CHECKOUT / "benchmarks" / "scaling.py"
    if not script.exists():
        typer.echo(f"paca bench: {script} not found. The benchmarks are not part of the installed package; "
                   f"run this command from a clone of the PaCa Serve repository (pip install -e .).", err=True)
        raise typer.Exit(2)
    command = [sys.executable, str(script), "--sizes", sizes, "--rounds", str(rounds), "--warmup", str(warmup),
               "--threads", str(threads), "--output", str(output)]
    if models:
        command += ["--models", models]
    raise typer.Exit(subprocess.run(command, check=False).returncode)


@bench_app.command("serving")
def bench_serving_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for serving.json, serving.md and "
                                         "serving.png.")] = Path("benchmark-results/serving"),
    seconds: Annotated[float, typer.Option(help="Window per system, leg and concurrency, per round.", min=0.1)] = 4.0,
    rounds: Annotated[int, typer.Option(help="Rounds over everything, in rotated order.", min=1)] = 3,
    concurrency: Annotated[str, typer.Option(help="Comma-separated client concurrencies.")] = "1,4,16",
    models: Annotated[str, typer.Option(help="Comma-separated: tiny (a tiny PaCa-ViT classifier, 32×32), paca-tiny "
                                        "(PaCa-Tiny 224², random weights).")] = "tiny,paca-tiny",
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime intra-op threads for every model and system "
                                                "(default: 1 for tiny, 2 for paca-tiny).", min=1)] = None,
    no_pytriton: Annotated[bool, typer.Option("--no-pytriton", help="Leave the Triton (PyTriton) peer out.")] = False,
    smoke: Annotated[bool, typer.Option(help="Seconds: the tiny model, c=1,2, one round, fewer peers.")] = False,
) -> None:
    """PaCa Serve vs the raw backend vs Triton (PyTriton), LitServe and a naive FastAPI app, side by side.

    Runs benchmarks/serving.py of the source checkout: perf_analyzer (HTTP, gRPC) and a Python client,
    rotated rounds, a table with the goals of docs/performance.md and a plot.
    """
    script = CHECKOUT / "benchmarks" / "serving.py"
    if not script.exists():
        typer.echo(f"paca bench: {script} not found. The benchmarks are not part of the installed package; "
                   f"run this command from a clone of the PaCa Serve repository (pip install -e .).", err=True)
        raise typer.Exit(2)
    command = [sys.executable, str(script), "--output", str(output), "--seconds", str(seconds), "--rounds",
               str(rounds), "--concurrency", *concurrency.split(","), "--models", *models.split(",")]
    command += ["--threads", str(threads)] if threads else []
    command += ["--no-pytriton"] * no_pytriton + ["--smoke"] * smoke
    raise typer.Exit(subprocess.run(command, check=False).returncode)
