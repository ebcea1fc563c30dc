"""`build_engine`: ONNX artifact → TensorRT plan + manifest (serving-reference.md §C.6–§C.8).

The `tensorrt` module is passed in (default: the real one) so this code is exercised against a
fake in CI; only a run with real TensorRT on a GPU verifies it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import onnx

from export.metadata import read_metadata
from export.tensorrt.manifest import (
    EngineManifest,
    MachineInfo,
    default_timing_cache,
    file_sha256,
    write_manifest,
)
from export.tensorrt.precision import fp16_graph, plan_precision
from export.tensorrt.profiles import ShapeProfile

Progress = Callable[[str], None]


class TensorRTUnavailableError(RuntimeError):
    pass


class EngineBuildError(RuntimeError):
    pass


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTUnavailableError(
            f"TensorRT is not importable here ({exc}). Build engines on the GPU machine that will run them "
            "(pip install tensorrt-cu13); `paca build-engine --print-trtexec` prints the trtexec equivalent."
        ) from exc
    return tensorrt


def cuda_machine_info(trt: ModuleType) -> MachineInfo:
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailableError("no CUDA device: TensorRT engines are built on the GPU that runs them")
    major, minor = torch.cuda.get_device_capability()
    return MachineInfo(trt.__version__, torch.cuda.get_device_name(), f"{major}.{minor}")


def trt_major(trt: ModuleType) -> int:
    return int(str(trt.__version__).split(".")[0])


def register_plugin() -> None:
    """Import the QDP definitions (registers `paca::PaCaAttention` with TensorRT's plugin registry)."""
    import export.tensorrt.plugin  # noqa: F401


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, profile: ShapeProfile, *,
                 precision: str = "fp32", timing_cache: str | os.PathLike | None = None,
                 workspace_mib: int = 4096, optimization_level: int = 3, trt: ModuleType | None = None,
                 machine: MachineInfo | None = None, progress: Progress | None = None,
                 plugin_registrar: Callable[[], None] = register_plugin) -> EngineManifest:
    """Build and write `engine_path` and its manifest; returns the manifest."""
    report = progress or (lambda _msg: None)
    trt = trt or import_tensorrt()
    machine = machine or cuda_machine_info(trt)
    major = trt_major(trt)
    plan = plan_precision(precision, major)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)

    report("reading the ONNX artifact")
    model = onnx.load(str(onnx_path))
    metadata = read_metadata(model)
    if plan.needs_graph_casts:
        report("casting the graph to fp16 (TensorRT 11 is strongly typed)")
        model = fp16_graph(model)

    report("registering the PaCaAttention plugin")
    plugin_registrar()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed and major == 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if hasattr(trt.NetworkDefinitionCreationFlag, "PREFER_AOT_PYTHON_PLUGINS"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    report("parsing the ONNX graph")
    if not parser.parse(model.SerializeToString(), str(onnx_path.parent)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.builder_optimization_level = optimization_level
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    optimization_profile = builder.create_optimization_profile()
    optimization_profile.set_shape(profile.input_name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(optimization_profile)

    cache_path = Path(timing_cache) if timing_cache is not None else default_timing_cache(machine, precision)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)

    report("building the engine (TensorRT times every tactic; minutes)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path}; see the log above")

    report("writing engine, timing cache and manifest")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    manifest = EngineManifest(
        tensorrt_version=machine.tensorrt_version, gpu_name=machine.gpu_name,
        compute_capability=machine.compute_capability, precision=precision, profiles=(profile,),
        onnx_sha256=file_sha256(onnx_path), onnx_file=onnx_path.name, arch=metadata.arch, task=metadata.task,
    )
    write_manifest(engine_path, manifest)
    return manifest
