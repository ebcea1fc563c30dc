"""The trtexec command line equivalent to a `paca build-engine` call (for C++-only deployments)."""

from __future__ import annotations

import os
from pathlib import Path

from export.tensorrt.profiles import ShapeProfile, trtexec_shape


def trtexec_command(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, profile: ShapeProfile, *,
                    precision: str = "fp32", trt_major: int = 10, timing_cache: str | os.PathLike | None = None,
                    workspace_mib: int = 4096, plugin_library: str | None = None) -> list[str]:
    """argv for trtexec. The QDP plugin is Python, so trtexec *builds* only with `--plugin-library`
    (an IPluginV3 .so); AOT engines built by `paca build-engine` *run* in trtexec without it."""
    name = profile.input_name
    argv = [
        "trtexec", f"--onnx={Path(onnx_path)}", f"--saveEngine={Path(engine_path)}",
        f"--minShapes={name}:{trtexec_shape(profile.min)}",
        f"--optShapes={name}:{trtexec_shape(profile.opt)}",
        f"--maxShapes={name}:{trtexec_shape(profile.max)}",
        f"--memPoolSize=workspace:{workspace_mib}M",
    ]
    if precision == "fp16" and trt_major == 10:
        argv += ["--fp16", "--precisionConstraints=obey"]
    if timing_cache is not None:
        argv.append(f"--timingCacheFile={Path(timing_cache)}")
    if plugin_library is not None:
        argv.append(f"--staticPlugins={plugin_library}")
    return argv
