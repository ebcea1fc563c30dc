"""The trtexec command lines equivalent to a `paca build-engine` call (for C++-only deployments).

Flags follow the TensorRT major version that will run them: both build strongly typed networks with TF32
off (`--noTF32`), like `build_engine`; TensorRT 10 needs `--stronglyTyped`, TensorRT 11 has no weak typing
(`--stronglyTyped` is a deprecated no-op there, and `--fp16`/`--precisionConstraints` are gone). An fp16
engine is built from the fp16 graph, written first by `python -m export.tensorrt.precision`.
"""

from __future__ import annotations

import importlib
import os
import shlex
from importlib import metadata
from pathlib import Path

from export.tensorrt.profiles import ShapeProfile, trtexec_shape
from export.tensorrt.versions import parse_version

LATEST_MAJOR = 11
DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings", "tensorrt-cu12-bindings")


def installed_major() -> int | None:
    """Major version of the TensorRT installed here, or None."""
    for name in DISTRIBUTIONS:
        try:
            return parse_version(metadata.version(name))[0]
        except (metadata.PackageNotFoundError, ValueError):
            continue
    try:
        return parse_version(importlib.import_module("tensorrt").__version__)[0]
    except (ImportError, AttributeError, ValueError):
        return None


def fp16_onnx_path(onnx_path: str | os.PathLike) -> Path:
    path = Path(onnx_path)
    return path.with_name(f"{path.stem}.fp16{path.suffix}")


def trtexec_command(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, profile: ShapeProfile, *,
                    trt_major: int, timing_cache: str | os.PathLike | None = None, workspace_mib: int = 4096,
                    plugin_library: str | None = None) -> list[str]:
    """argv for trtexec on the graph at `onnx_path` (already fp16 for an fp16 engine). The QDP plugin is
    Python, so trtexec *builds* only with `plugin_library` (an IPluginV3 .so); AOT engines built by
    `paca build-engine` *run* in trtexec without it."""
    if trt_major < 10:
        raise ValueError(f"TensorRT {trt_major} is not supported (need 10.9 or newer)")
    name = profile.input_name
    argv = [
        "trtexec", f"--onnx={Path(onnx_path)}", f"--saveEngine={Path(engine_path)}",
        f"--minShapes={name}:{trtexec_shape(profile.min)}",
        f"--optShapes={name}:{trtexec_shape(profile.opt)}",
        f"--maxShapes={name}:{trtexec_shape(profile.max)}",
        f"--memPoolSize=workspace:{workspace_mib}M",
        "--noTF32",
    ]
    if trt_major == 10:
        argv.append("--stronglyTyped")
    if timing_cache is not None:
        argv.append(f"--timingCacheFile={Path(timing_cache)}")
    if plugin_library is not None:
        argv.append(f"--staticPlugins={plugin_library}")
    return argv


def trtexec_script(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, profile: ShapeProfile, *,
                   precision: str, trt_major: int, timing_cache: str | os.PathLike | None = None,
                   workspace_mib: int = 4096, plugin_library: str | None = None) -> list[str]:
    """Shell lines: for fp16 the cast step, then trtexec."""
    lines = []
    graph = Path(onnx_path)
    if precision == "fp16":
        graph = fp16_onnx_path(onnx_path)
        lines.append(shlex.join(["python", "-m", "export.tensorrt.precision", str(onnx_path), str(graph)]))
    lines.append(shlex.join(trtexec_command(graph, engine_path, profile, trt_major=trt_major,
                                            timing_cache=timing_cache, workspace_mib=workspace_mib,
                                            plugin_library=plugin_library)))
    return lines
