"""`paca export`, `paca build-engine`, `paca export-triton`.

Nothing heavy at import: torch, onnx and tensorrt are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EXPORT_STEPS = 5  # the report() calls of export_onnx


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
    app.command("build-engine")(build_engine_command)
    app.command("export-triton")(export_triton_command)


def _known_arch(arch: str) -> str:
    from models.registry import list_archs

    if arch not in list_archs():
        raise typer.BadParameter(f"unknown arch {arch!r}; run `paca models list` to see the known ones",
                                 param_hint="--arch")
    return arch


def export_command(
    arch: Annotated[str, typer.Option(help="Registered arch to export (see `paca models list`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .onnx file.")],
    checkpoint: Annotated[Path | None, typer.Option(
        help="Weights to load strictly (.pth/.safetensors); without it the random initialisation is exported.",
        exists=True, dir_okay=False)] = None,
    opset: Annotated[int, typer.Option(help="ONNX default-domain opset (>= 18).", min=18)] = 18,
    inline: Annotated[bool, typer.Option(
        help="Write a plugin-free graph: PaCaAttention nodes replaced by their body (no `paca` domain).")] = False,
    verify: Annotated[bool, typer.Option(
        help="After writing, run ONNX Runtime and PyTorch on random inputs (batch 1 and 3; detection 1) and "
             "fail if any output differs by more than 1e-4.")] = False,
    verify_hw: Annotated[str | None, typer.Option(
        help="HEIGHTxWIDTH for --verify with dense tasks (default 224x320).")] = None,
) -> None:
    """Export ARCH to one self-contained ONNX file.

    The file has a dynamic batch axis (and dynamic height/width for segmentation and detection),
    PaCaAttention custom nodes (domain `paca`, TensorRT plugin attributes) with a model-local function
    body so ONNX Runtime runs it unchanged, the per-stage cluster maps as extra outputs, and metadata
    (arch, task, preprocessing, labels) so the service needs nothing but the file.
    """
    _known_arch(arch)
    hw = _hw_option(verify_hw, "--verify-hw")
    from export.metadata import describe_weights
    from export.onnx_export import export_onnx, load_model
    from export.progress import step_progress

    model = load_model(arch, checkpoint)
    with step_progress(f"export {arch}", EXPORT_STEPS) as report:
        path = export_onnx(arch, output, model=model, opset=opset, inline=inline,
                           weights=describe_weights(checkpoint), progress=report)
    size_mb = path.stat().st_size / 1e6
    typer.echo(f"{path} ({size_mb:.1f} MB)")
    if verify:
        from export.verify import verify_export

        try:
            results = verify_export(path, model, hw=hw)
        except AssertionError as exc:
            typer.echo(f"verification FAILED: {exc}", err=True)
            raise typer.Exit(1) from exc
        for result in results:
            alone = (f", batched vs alone {max(result.batched_vs_alone.values()):.2e}"
                     if result.batched_vs_alone else "")
            typer.echo(f"verified batch {result.batch} {result.hw[0]}x{result.hw[1]}: "
                       f"max |ONNX Runtime − PyTorch| = {result.worst:.2e}{alone}")


BUILD_STEPS = 6  # the report() calls of build_engine


def _hw_option(value: str | None, name: str) -> tuple[int, int] | None:
    from export.tensorrt.profiles import parse_hw

    if value is None:
        return None
    try:
        return parse_hw(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from exc


def build_engine_command(
    onnx_file: Annotated[Path, typer.Argument(help="ONNX artifact written by `paca export`.", exists=True,
                                              dir_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Engine (.plan) to write; the manifest goes "
                                         "beside it as <output>.json.")],
    precision: Annotated[str, typer.Option(help="fp32 or fp16 (strongly typed: fp16 graph casts with "
                                           "softmaxes/norms/reductions kept fp32; TF32 off).")] = "fp32",
    min_batch: Annotated[int, typer.Option(help="Smallest batch the engine accepts.", min=1)] = 1,
    opt_batch: Annotated[int, typer.Option(help="Batch TensorRT tunes for (match the batcher's usual "
                                           "batch).", min=1)] = 8,
    max_batch: Annotated[int, typer.Option(help="Largest batch (>= the server's max batch size).", min=1)] = 32,
    min_hw: Annotated[str | None, typer.Option(help="Smallest HEIGHTxWIDTH (dense tasks; default 32x32).")] = None,
    opt_hw: Annotated[str | None, typer.Option(help="HEIGHTxWIDTH TensorRT tunes for (default from the "
                                               "preprocessing).")] = None,
    max_hw: Annotated[str | None, typer.Option(help="Largest HEIGHTxWIDTH (default: the preprocessing's long "
                                               "side, padded).")] = None,
    timing_cache: Annotated[Path | None, typer.Option(help="Timing cache file to reuse and update (default "
                                                      "~/.cache/paca/tensorrt/timing-<trt>-<sm>-….cache).")] = None,
    workspace_mib: Annotated[int, typer.Option(help="Builder workspace limit in MiB.", min=64)] = 4096,
    optimization_level: Annotated[int, typer.Option(help="TensorRT builder optimisation level 0–5.", min=0,
                                                    max=5)] = 3,
    print_trtexec: Annotated[bool, typer.Option(help="Only print the equivalent trtexec command (works "
                                                "without TensorRT) and exit.")] = False,
    trt_major: Annotated[int | None, typer.Option(help="TensorRT major version the --print-trtexec flags are "
                                                  "for (default: the installed one, else 11).", min=10)] = None,
) -> None:
    """Build a TensorRT engine from an exported PaCa ONNX file, with the PaCaAttention QDP plugin.

    The optimisation profile defaults to what the service sends for the artifact's preprocessing
    (fixed size for classification; any orientation up to the long side for dense tasks; detection is
    refused by the builder). Needs TensorRT >= 10.9 and a CUDA GPU; the engine only runs on the same TensorRT version
    and GPU compute capability, which the JSON manifest written beside it records and `load_engine` checks.
    """
    import onnx

    from export.metadata import read_metadata
    from export.tensorrt.profiles import ShapeProfile, default_profile
    from export.tensorrt.trtexec import LATEST_MAJOR, installed_major, trtexec_script

    if precision not in ("fp32", "fp16"):
        raise typer.BadParameter(f"unknown precision {precision!r}; use fp32 or fp16", param_hint="--precision")
    try:
        metadata = read_metadata(onnx.load(str(onnx_file), load_external_data=False))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="ONNX_FILE") from exc
    base = default_profile(metadata.task, metadata.preprocess, max_batch=max_batch, opt_batch=min(opt_batch, max_batch),
                           min_hw=_hw_option(min_hw, "--min-hw"))
    lo, opt, hi = list(base.min), list(base.opt), list(base.max)
    if metadata.task_spec.batchable:
        lo[0] = min_batch
    for shape, value, name in ((opt, opt_hw, "--opt-hw"), (hi, max_hw, "--max-hw")):
        hw = _hw_option(value, name)
        if hw is not None:
            if metadata.preprocess.fixed_input_size is not None:
                raise typer.BadParameter(f"{metadata.arch} has a fixed input size", param_hint=name)
            shape[2:] = hw
    try:
        profile = ShapeProfile(tuple(lo), tuple(opt), tuple(hi))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if print_trtexec:
        major = trt_major or installed_major()
        if major is None:
            major = LATEST_MAJOR
            typer.echo(f"# TensorRT is not installed here: flags for TensorRT {major} (--trt-major 10 for 10.x)")
        for line in trtexec_script(onnx_file, output, profile, precision=precision, trt_major=major,
                                   timing_cache=timing_cache, workspace_mib=workspace_mib):
            typer.echo(line)
        return

    from export.progress import step_progress
    from export.tensorrt.builder import EngineBuildError, TensorRTUnavailableError, build_engine

    try:
        with step_progress(f"build-engine {metadata.arch}", BUILD_STEPS) as report:
            manifest = build_engine(onnx_file, output, profile, precision=precision, timing_cache=timing_cache,
                                    workspace_mib=workspace_mib, optimization_level=optimization_level,
                                    progress=report)
    except TensorRTUnavailableError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except EngineBuildError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{output} (TensorRT {manifest.tensorrt_version}, {manifest.gpu_name}, "
               f"compute capability {manifest.compute_capability})")


def export_triton_command(
    onnx_file: Annotated[Path, typer.Argument(help="ONNX artifact written by `paca export`.", exists=True,
                                              dir_okay=False)],
    repository: Annotated[Path, typer.Option("--repository", "-r", help="Model repository folder to write "
                                             "into (created if missing; other models are left alone).")],
    model_name: Annotated[str | None, typer.Option(help="Base model name (default: the arch); the variants are "
                                                   "<name>_onnx and <name>_trt.")] = None,
    engine: Annotated[Path | None, typer.Option(help="TensorRT plan from `paca build-engine` to put in the "
                                                "_trt variant (its .json manifest must sit beside it).",
                                                exists=True, dir_okay=False)] = None,
    max_batch_size: Annotated[int, typer.Option(help="Triton max_batch_size (Triton batches only inputs of "
                                                "one shape: same-size images).", min=1)] = 16,
    preferred_batch: Annotated[list[int] | None, typer.Option(help="Preferred batch sizes of the dynamic "
                                                              "batcher (repeatable); also warmed up.")] = None,
    max_queue_delay_us: Annotated[int, typer.Option(help="Dynamic batcher max queue delay (µs).", min=0)] = 2000,
    cpu_instances: Annotated[int, typer.Option(help="ONNX Runtime instances (KIND_CPU).", min=1)] = 2,
    gpu_instances: Annotated[int, typer.Option(help="TensorRT instances per GPU (KIND_GPU).", min=1)] = 1,
    onnx_on_gpu: Annotated[bool, typer.Option(help="Run the ONNX Runtime variant on the GPU (KIND_GPU).")] = False,
) -> None:
    """Write a Triton Inference Server model repository for an exported PaCa model.

    Two variants: <name>_onnx (onnxruntime_onnx, runs the file unchanged) and <name>_trt (tensorrt_plan),
    each with config.pbtxt (dynamic batching, queue policy, instance groups, warmup of every preferred
    batch size), labels.txt and preprocess.json, plus a README explaining how the plugin is loaded.
    """
    from export.tensorrt.manifest import EngineMismatchError
    from export.triton_repo import RepositoryOptions, write_triton_repository

    options = RepositoryOptions(max_batch_size=max_batch_size,
                                preferred_batch_sizes=tuple(preferred_batch or (4, 8)),
                                max_queue_delay_us=max_queue_delay_us, cpu_instances=cpu_instances,
                                gpu_instances=gpu_instances, onnx_on_gpu=onnx_on_gpu)
    try:
        path = write_triton_repository(onnx_file, repository, model_name=model_name, engine_path=engine,
                                       options=options)
    except (ValueError, EngineMismatchError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"wrote Triton model repository {path}")
