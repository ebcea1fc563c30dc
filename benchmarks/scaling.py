"""Latency and peak memory vs input resolution on ONNX Runtime CPU: PaCa-Tiny against timm baselines.

The PaCa-ViT paper's claim: patch-to-cluster attention costs O(N·M) for N patches and M clusters, so the
network grows linearly with the number of pixels, where global attention (ViT) grows quadratically and
PVT's spatial-reduction attention is quadratic with a 64× smaller constant in its first stage. This measures it:

    python benchmarks/scaling.py                                  # all models, 224² 448² 672² 1024²
    python benchmarks/scaling.py --models paca_tiny,pvt_v2_b1 --sizes 64,96 --rounds 2   # a quick smoke run
    paca bench scaling ...                                        # the same, from the `paca` command line

Every model is exported the same way (`torch.onnx.export`, dynamo, opset 18, optimised, static 1×3×S×S
input, logits only, random weights: speed does not depend on them) at every size, then run on ONNX Runtime
CPU (batch 1, the same intra-op threads, spinning off). Latency: every (model, size) is loaded and warmed
up (all at once: about 10 GB for the full set), then timed in rounds that run all of them in an order rotating
each round, so a slow phase of a shared machine hits every model and every size alike; the median is
reported. Work: forward GFLOPs counted by torch's FlopCounterMode on the same model. Peak memory: each
(model, size) runs once in a fresh process, and the growth of that process's peak RSS over session creation
and one run is reported (weights, ONNX Runtime's arena, activations).

PaCa-Tiny is exported twice: as `paca export` writes it (PaCaAttention custom nodes with a model-local
function body, which ONNX Runtime inlines at load) and as `paca export --inline` writes it (no custom node).
Swin is created with `img_size=S` (its attention window stays 7×7; timm pads feature maps to a multiple of
the window), ViT with `img_size=S` (position embeddings resized; 16×16 patches, global attention), so every
model takes every size. Writes scaling.json (every sample), scaling.md (tables) and scaling.png.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

PACA_ARCH = "pacavit_tiny_p2cconv_100_0"
DEFAULT_SIZES = (224, 448, 672, 1024)


@dataclass(frozen=True)
class Candidate:
    key: str
    label: str
    build: Callable[[int], object]  # size -> torch module in eval mode
    paca: bool = False
    inline: bool = False


def _paca(_size: int):
    from export.onnx_export import load_model

    return load_model(PACA_ARCH, None)


def _timm(name: str, **options: object) -> Callable[[int], object]:
    def build(size: int):
        import timm

        extra = {key: (size if value == "SIZE" else value) for key, value in options.items()}
        return timm.create_model(name, pretrained=False, **extra).eval()

    return build


CANDIDATES = {
    c.key: c
    for c in (
        Candidate("paca_tiny", "PaCa-Tiny (PaCaAttention function)", _paca, paca=True),
        Candidate("paca_tiny_inline", "PaCa-Tiny (--inline graph)", _paca, paca=True, inline=True),
        Candidate("pvt_v2_b1", "PVTv2-b1 (timm pvt_v2_b1)", _timm("pvt_v2_b1")),
        Candidate("swin_tiny", "Swin-T (timm swin_tiny_patch4_window7_224)",
                  _timm("swin_tiny_patch4_window7_224", img_size="SIZE")),
        Candidate("vit_small", "ViT-S/16 (timm vit_small_patch16_224)",
                  _timm("vit_small_patch16_224", img_size="SIZE")),
    )
}


# --- export -------------------------------------------------------------------------------------------------


def count_gflops(model, example) -> float:
    """Forward-pass GFLOPs (2 per multiply-add) of convolutions and matrix products, by torch's FlopCounterMode.

    The counter has no formula for the fused CPU attention kernel, so timm's attention blocks are switched to
    their explicit matmul + softmax path while counting (same arithmetic, now visible to the counter).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    fused = [m for m in model.modules() if getattr(m, "fused_attn", False)]
    for module in fused:
        module.fused_attn = False
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(example)
    finally:
        for module in fused:
            module.fused_attn = True
    return counter.get_total_flops() / 1e9


def export_candidate(candidate: Candidate, size: int, path: Path) -> dict[str, float]:
    """Write `candidate` at `size` to `path`; returns parameters (millions), GFLOPs and export seconds."""
    import onnx
    import torch

    torch.manual_seed(0)
    model = candidate.build(size).eval()
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    gflops = count_gflops(model, example)
    started = time.perf_counter()
    if candidate.paca:
        from export.custom_op import custom_attention_cores

        swap = custom_attention_cores(model)
    else:
        swap = contextlib.nullcontext()
    with swap, torch.no_grad():
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=18, input_names=["pixel_values"],
                                    output_names=["logits"], optimize=True, external_data=False, verbose=False)
    proto = program.model_proto
    if candidate.paca:
        from export.onnx_function import attach_attention_function, inline_attention

        attach_attention_function(proto)
        if candidate.inline:
            proto = inline_attention(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    info = {"params_m": round(params_m, 3), "gflops": round(gflops, 3),
            "export_s": round(time.perf_counter() - started, 1)}
    path.with_suffix(".json").write_text(json.dumps(info))
    return info


# --- ONNX Runtime -------------------------------------------------------------------------------------------


def make_session(path: Path, threads: int):
    """ONNX Runtime CPU session with the defaults a server uses (memory arena on), spinning off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feed(size: int) -> dict[str, np.ndarray]:
    return {"pixel_values": np.random.default_rng(size).standard_normal((1, 3, size, size), dtype=np.float32)}


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM). Not ru_maxrss: that one survives fork + exec, so a child of
    a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def peak_memory_child(path: Path, size: int, threads: int) -> None:
    """Runs in a fresh process: peak RSS growth (MiB) over session creation + one run, printed as JSON."""
    import onnxruntime  # noqa: F401  (imported before the baseline: its libraries are not the model's memory)

    inputs = feed(size)
    before_kib = peak_rss_kib()
    session = make_session(path, threads)
    session.run(None, inputs)
    print(json.dumps({"peak_mib": (peak_rss_kib() - before_kib) / 1024}))


def measure_peak_memory(path: Path, size: int, threads: int) -> float:
    command = [sys.executable, __file__, "--peak-memory-of", str(path), "--sizes", str(size),
               "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"peak-memory run of {path.name} failed:\n{result.stderr[-2000:]}")
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"])


def interleaved_latency(paths: dict[tuple[str, int], Path], threads: int, rounds: int,
                        warmup: int) -> tuple[dict[tuple[str, int], list[float]], dict[tuple[str, int], float]]:
    """The ms of every timed run per (model, size), and the max |Δ| of each PaCa graph vs the first at its size.

    Every (model, size) session is loaded at once and each round runs all of them, in an order that rotates
    by one each round: a slow phase of a shared machine then hits every model and every size alike, so the
    growth with resolution is measured under the same conditions as the comparison between models.
    """
    feeds = {size: feed(size) for _, size in paths}
    sessions = {pair: make_session(path, threads) for pair, path in paths.items()}
    reference: dict[int, np.ndarray] = {}
    max_abs_diff: dict[tuple[str, int], float] = {}
    for (key, size), session in sessions.items():
        for _ in range(warmup):
            out = session.run(None, feeds[size])[0]
        if key.startswith("paca_tiny"):  # the two PaCa graphs must agree: same weights, same input
            reference.setdefault(size, out)
            max_abs_diff[key, size] = float(np.abs(out - reference[size]).max())
    pairs = list(sessions)
    samples: dict[tuple[str, int], list[float]] = {pair: [] for pair in pairs}
    for round_index in range(rounds):
        print(f"round {round_index + 1}/{rounds}", file=sys.stderr, flush=True)
        shift = round_index % len(pairs)
        for key, size in pairs[shift:] + pairs[:shift]:
            started = time.perf_counter()
            sessions[key, size].run(None, feeds[size])
            samples[key, size].append((time.perf_counter() - started) * 1000)
    del sessions
    gc.collect()
    return samples, max_abs_diff


# --- analysis and outputs -------------------------------------------------------------------------------------


def loglog_slope(pixels: list[int], values: list[float]) -> float:
    """Least-squares exponent k of value ∝ pixels^k (1 = linear in the number of patches, 2 = quadratic)."""
    if len(pixels) < 2:
        return float("nan")
    x, y = np.log(np.asarray(pixels, float)), np.log(np.asarray(values, float))
    return float(np.polyfit(x, y, 1)[0])


def analyse(results: list[dict], keys: list[str]) -> dict[str, dict]:
    growth = {}
    for key in keys:
        rows = sorted((r for r in results if r["model"] == key), key=lambda r: r["size"])
        first, last = rows[0], rows[-1]
        for row in rows:
            row["ms_per_megapixel"] = row["median_ms"] / (row["pixels"] / 1e6)
            row["cost_per_pixel_vs_smallest"] = row["ms_per_megapixel"] / first["median_ms"] * (first["pixels"] / 1e6)
        growth[key] = {
            "latency_ratio": last["median_ms"] / first["median_ms"],
            "pixel_ratio": last["pixels"] / first["pixels"],
            "loglog_slope": loglog_slope([r["pixels"] for r in rows], [r["median_ms"] for r in rows]),
            "gflops_ratio": last["gflops"] / first["gflops"],
            "gflops_loglog_slope": loglog_slope([r["pixels"] for r in rows], [r["gflops"] for r in rows]),
            "memory_ratio": last["peak_mib"] / first["peak_mib"] if first["peak_mib"] > 0 else float("nan"),
        }
    return growth


def markdown(report: dict) -> str:
    keys, sizes = report["models_order"], report["settings"]["sizes"]
    by = {(r["model"], r["size"]): r for r in report["results"]}
    labels = {k: report["models"][k]["label"] for k in keys}
    settings = report["settings"]
    lines = [
        f"ONNX Runtime {settings['onnxruntime']} CPU, {settings['threads']} intra-op threads, spinning off, batch 1, "
        f"random weights; median of {settings['rounds']} rounds interleaving every model and "
        f"size; {settings['cpu']} "
        f"({settings['cpu_count']} cores), load average {settings['load_before']} before / "
        f"{settings['load_after']} after.",
        "",
        "Median latency in ms (peak memory growth in MiB):",
        "",
        "| model | params (M) | " + " | ".join(f"{s}²" for s in sizes) + " | ×latency for ×pixels | exponent |",
        "|---|---:|" + "---:|" * len(sizes) + "---:|---:|",
    ]
    for key in keys:
        growth = report["growth"][key]
        cells = [f"{by[key, s]['median_ms']:.0f} ({by[key, s]['peak_mib']:.0f})" for s in sizes]
        lines.append(f"| {labels[key]} | {report['models'][key]['params_m']:.1f} | " + " | ".join(cells)
                     + f" | ×{growth['latency_ratio']:.1f} for ×{growth['pixel_ratio']:.1f} "
                     f"| {growth['loglog_slope']:.2f} |")
    lines += [
        "",
        "Fastest run in ms (the least disturbed by other load on a shared machine):",
        "",
        "| model | " + " | ".join(f"{s}²" for s in sizes) + " | ×latency for ×pixels | exponent |",
        "|---|" + "---:|" * len(sizes) + "---:|---:|",
    ]
    for key in keys:
        mins = [by[key, s]["min_ms"] for s in sizes]
        lines.append(f"| {labels[key]} | " + " | ".join(f"{v:.0f}" for v in mins)
                     + f" | ×{mins[-1] / mins[0]:.1f} for ×{report['growth'][key]['pixel_ratio']:.1f} "
                     f"| {loglog_slope([s * s for s in sizes], mins):.2f} |")
    lines += [
        "",
        "Work: forward GFLOPs (torch FlopCounterMode: convolutions and matrix products):",
        "",
        "| model | " + " | ".join(f"{s}²" for s in sizes) + " | ×GFLOPs for ×pixels | exponent |",
        "|---|" + "---:|" * len(sizes) + "---:|---:|",
    ]
    for key in keys:
        growth = report["growth"][key]
        cells = [f"{by[key, s]['gflops']:.1f}" for s in sizes]
        lines.append(f"| {labels[key]} | " + " | ".join(cells) + f" | ×{growth['gflops_ratio']:.1f} for "
                     f"×{growth['pixel_ratio']:.1f} | {growth['gflops_loglog_slope']:.2f} |")
    lines += [
        "",
        "Cost per pixel: ms per megapixel (relative to the smallest size):",
        "",
        "| model | " + " | ".join(f"{s}²" for s in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for key in keys:
        cells = [f"{by[key, s]['ms_per_megapixel']:.0f} ({by[key, s]['cost_per_pixel_vs_smallest']:.2f}×)"
                 for s in sizes]
        lines.append(f"| {labels[key]} | " + " | ".join(cells) + " |")
    if "paca_tiny" in keys and "paca_tiny_inline" in keys:
        ratios = ", ".join(f"{s}²: {by['paca_tiny', s]['median_ms'] / by['paca_tiny_inline', s]['median_ms']:.2f}"
                           for s in sizes)
        diffs = max(by["paca_tiny_inline", s].get("max_abs_diff_vs_function", 0.0) for s in sizes)
        lines += ["", f"PaCaAttention function / `--inline` graph latency: {ratios} "
                      f"(outputs equal within {diffs:.1e})."]
    lines += ["", "Exponent: least-squares k in latency (or GFLOPs) ∝ pixels^k over the sizes (1 = linear in the "
                  "number of patches, 2 = quadratic)."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys, sizes = report["models_order"], report["settings"]["sizes"]
    by = {(r["model"], r["size"]): r for r in report["results"]}
    fig, grid = plt.subplots(2, 2, figsize=(13, 9))
    axes = grid.ravel()
    pixels = [s * s for s in sizes]
    for key in keys:
        label = report["models"][key]["label"]
        latency = [by[key, s]["median_ms"] for s in sizes]
        axes[0].plot(pixels, latency, marker="o", label=label)
        axes[1].plot(sizes, [by[key, s]["ms_per_megapixel"] for s in sizes], marker="o", label=label)
        axes[2].plot(sizes, [by[key, s]["gflops"] / (s * s / 1e6) for s in sizes], marker="o", label=label)
        axes[3].plot(sizes, [by[key, s]["peak_mib"] for s in sizes], marker="o", label=label)
    first = keys[0]
    base = by[first, sizes[0]]["median_ms"]
    axes[0].plot(pixels, [base * p / pixels[0] for p in pixels], "k:", label="linear in pixels (from first model)")
    axes[0].set(xscale="log", yscale="log", xlabel="pixels (log)", ylabel="median latency, ms (log)",
                title="Latency vs pixels")
    axes[1].set(xlabel="side (px)", ylabel="ms per megapixel", title="Time per pixel vs resolution")
    axes[2].set(xlabel="side (px)", ylabel="GFLOPs per megapixel", title="Work per pixel vs resolution")
    axes[3].set(xlabel="side (px)", ylabel="peak RSS growth, MiB", title="Peak memory vs resolution")
    for axis in axes:
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"ONNX Runtime CPU, batch 1, {report['settings']['threads']} threads", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def versions() -> dict[str, str]:
    import onnxruntime
    import torch

    found = {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__}
    with contextlib.suppress(ImportError):
        import timm

        found["timm"] = timm.__version__
    return found


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# --- main ---------------------------------------------------------------------------------------------------


def parse_list(text: str, kind: type) -> list:
    return [kind(item.strip()) for item in text.split(",") if item.strip()]


def run(keys: list[str], sizes: list[int], rounds: int, warmup: int, threads: int, output: Path,
        work_dir: Path, reuse_onnx: bool = False) -> dict:
    unknown = [k for k in keys if k not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {', '.join(CANDIDATES)}")
    if not keys or not sizes or rounds < 1:
        raise SystemExit("need at least one model, one size and one round")
    if any(s < 32 or s % 32 for s in sizes):
        raise SystemExit(f"sizes must be multiples of 32 (≥ 32), got {sizes}")
    load_before = load_average()
    models: dict[str, dict] = {}
    paths: dict[tuple[str, int], Path] = {}
    infos: dict[tuple[str, int], dict] = {}
    for size in sizes:
        for key in keys:
            path = work_dir / f"{key}_{size}.onnx"
            if reuse_onnx and path.exists() and path.with_suffix(".json").exists():
                info = json.loads(path.with_suffix(".json").read_text())
            else:
                print(f"export {key} at {size}²", file=sys.stderr, flush=True)
                info = export_candidate(CANDIDATES[key], size, path)
            models.setdefault(key, {"label": CANDIDATES[key].label, "params_m": info["params_m"]})
            paths[key, size], infos[key, size] = path, info
            gc.collect()
    print(f"latency: {rounds} rounds over every model and size", file=sys.stderr, flush=True)
    samples, diffs = interleaved_latency(paths, threads, rounds, warmup)
    results = []
    for size in sizes:
        for key in keys:
            row = {"model": key, "size": size, "pixels": size * size,
                   "median_ms": statistics.median(samples[key, size]), "min_ms": min(samples[key, size]),
                   "samples_ms": [round(v, 3) for v in samples[key, size]], "gflops": infos[key, size]["gflops"],
                   "onnx_mb": round(paths[key, size].stat().st_size / 1e6, 2)}
            if (key, size) in diffs and key != "paca_tiny":
                row["max_abs_diff_vs_function"] = diffs[key, size]
            results.append(row)
    for row in results:
        print(f"peak memory {row['model']} at {row['size']}²", file=sys.stderr, flush=True)
        row["peak_mib"] = measure_peak_memory(paths[row["model"], row["size"]], row["size"], threads)
    report = {
        "settings": {"sizes": sizes, "rounds": rounds, "warmup": warmup, "threads": threads, "batch": 1,
                     "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                     "cpu": cpu_name(), "cpu_count": os.cpu_count(), "load_before": load_before,
                     "load_after": load_average(), **versions()},
        "models_order": keys,
        "models": models,
        "results": results,
    }
    report["growth"] = analyse(results, keys)
    output.mkdir(parents=True, exist_ok=True)
    (output / "scaling.json").write_text(json.dumps(report, indent=2))
    (output / "scaling.md").write_text(markdown(report))
    plot(report, output / "scaling.png")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(CANDIDATES),
                        help=f"comma-separated, from {', '.join(CANDIDATES)} (default: all)")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="square input sides, px")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds per size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per session first")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--output", type=Path, default=Path("benchmark-results/scaling"),
                        help="folder for scaling.json, scaling.md, scaling.png")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the ONNX files go (default: OUTPUT/onnx)")
    parser.add_argument("--reuse-onnx", action="store_true",
                        help="keep ONNX files (and their FLOP counts) already in the work dir instead of exporting")
    parser.add_argument("--peak-memory-of", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = parse_list(args.sizes, int)
    if args.peak_memory_of is not None:
        peak_memory_child(args.peak_memory_of, sizes[0], args.threads)
        return 0
    report = run(parse_list(args.models, str), sizes, args.rounds, args.warmup, args.threads, args.output,
                 args.work_dir or args.output / "onnx", reuse_onnx=args.reuse_onnx)
    print(markdown(report))
    print(f"wrote {args.output / 'scaling.json'}, scaling.md, scaling.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
