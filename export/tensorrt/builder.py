"""`build_engine`: ONNX artifact → TensorRT plan + manifest.

The `tensorrt` module is passed in (default: the real one) so this code is exercised against a
test double in CI; only a run with real TensorRT on a GPU verifies it.
"""

from __future__ import annotations

import os
import tempfile
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
from export.tensorrt.precision import fp16_graph, plan_precision, save_model
from export.tensorrt.profiles import ShapeProfile
from export.tensorrt.versions import TensorRTUnavailableError, require_supported

Progress = Callable[[str], None]

__all__ = ["EngineBuildError", "TensorRTUnavailableError", "build_engine", "import_tensorrt"]


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


def register_plugin() -> None:
    """Import the QDP definitions (registers `paca::PaCaAttention` with TensorRT's plugin registry)."""
    try:
        import export.tensorrt.plugin  # noqa: F401
    except ImportError as exc:
        raise TensorRTUnavailableError(f"the PaCaAttention plugin cannot be registered: {exc} (it needs "
                                       "tensorrt >= 10.9 and OpenAI Triton, which torch brings)") from exc


def write_atomically(path: Path, data: bytes) -> None:
    """Readers (other replicas on a shared volume) see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def network_flags(trt: ModuleType) -> int:
    """Strongly typed (TensorRT 10.x: the flag; 11.x: always) and AOT plugin implementations preferred."""
    flags = 0
    for name in ("STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS"):
        if hasattr(trt.NetworkDefinitionCreationFlag, name):
            flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    return flags


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, profile: ShapeProfile, *,
                 precision: str = "fp32", timing_cache: str | os.PathLike | None = None,
                 workspace_mib: int = 4096, optimization_level: int = 3, trt: ModuleType | None = None,
                 machine: MachineInfo | None = None, progress: Progress | None = None,
                 plugin_registrar: Callable[[], None] = register_plugin) -> EngineManifest:
    """Build and write `engine_path` and its manifest; returns the manifest."""
    report = progress or (lambda _msg: None)
    trt = trt or import_tensorrt()
    require_supported(trt.__version__)
    machine = machine or cuda_machine_info(trt)
    plan = plan_precision(precision)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)

    report("reading the ONNX artifact")
    metadata = read_metadata(onnx.load(str(onnx_path), load_external_data=False))
    if metadata.task == "detection":
        raise EngineBuildError(
            f"{onnx_path} is a detection artifact: its graph selects detections with NMS, whose result has a "
            "data-dependent length, which this TensorRT path does not build. Serve detection with the "
            "onnxruntime backend (CUDAExecutionProvider) or torch instead.")

    report("registering the PaCaAttention plugin")
    plugin_registrar()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    with tempfile.TemporaryDirectory(prefix="paca-trt-") as scratch:
        parse_path = onnx_path
        if plan.needs_graph_casts:
            report("casting the graph to fp16 (softmaxes, norms, reductions stay fp32)")
            parse_path = save_model(fp16_graph(onnx.load(str(onnx_path))), Path(scratch) / onnx_path.name)
        report("parsing the ONNX graph")
        # From the file, so external weights and models past protobuf's 2 GB limit parse too.
        if not parser.parse_from_file(str(parse_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.builder_optimization_level = optimization_level
    for flag in plan.cleared_flags:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
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
    write_atomically(engine_path, bytes(serialized))
    write_atomically(cache_path, bytes(config.get_timing_cache().serialize()))
    manifest = EngineManifest(
        tensorrt_version=machine.tensorrt_version, gpu_name=machine.gpu_name,
        compute_capability=machine.compute_capability, precision=precision, profiles=(profile,),
        onnx_sha256=file_sha256(onnx_path), onnx_file=onnx_path.name, arch=metadata.arch, task=metadata.task,
    )
    write_manifest(engine_path, manifest)
    return manifest
