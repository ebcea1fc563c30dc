"""Loading a PaCa TensorRT engine: manifest check first, then deserialisation.

Engines carry the PaCaAttention kernel ahead-of-time compiled (PTX in the plan), so loading one needs
neither `export.tensorrt.plugin` nor Triton: the plugin's Python definitions matter only while building.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from export.tensorrt.builder import cuda_machine_info, import_tensorrt
from export.tensorrt.manifest import MachineInfo, check_manifest, read_manifest


def load_engine(engine_path: str | os.PathLike, *, trt: ModuleType | None = None,
                machine: MachineInfo | None = None, onnx_path: str | os.PathLike | None = None,
                plugin_registrar: Callable[[], None] | None = None):
    """The deserialised ICudaEngine; EngineMismatchError (clear message) if built elsewhere.
    `plugin_registrar`: only for engines with JIT plugin layers, which PaCa engines do not have."""
    engine_path = Path(engine_path)
    manifest = read_manifest(engine_path)
    trt = trt or import_tensorrt()
    check_manifest(manifest, machine or cuda_machine_info(trt), onnx_path)
    if plugin_registrar is not None:
        plugin_registrar()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise RuntimeError(f"TensorRT could not deserialise {engine_path}")
    return engine
