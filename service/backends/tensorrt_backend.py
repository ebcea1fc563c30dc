"""TensorRT backend (GPU): a serialised engine + its manifest, run with execute_async_v3 on torch CUDA buffers.

Thin on purpose: the export engineer's `export.tensorrt.runtime.load_engine` checks the manifest (TensorRT
version, compute capability, source ONNX hash) and registers the PaCaAttention plugin *before*
deserialising, so a mismatched engine or a missing plugin fails at start-up with a clear message.
Options: onnx (source ONNX file: its metadata describes the model and its hash is checked; default: the
manifest's onnx_file next to the engine or its symlink target, else the manifest's arch from the registry),
plugins (extra plugin libraries to load first). Data-dependent output shapes (detection
engines) are not supported yet: serve detection with onnxruntime or torch.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from export.metadata import ArtifactMetadata, onnx_props
from service.backends.base import Backend, TensorSpec
from service.repository import ModelConfig

_NUMPY_TO_V2 = {np.dtype(np.float32): "FP32", np.dtype(np.float16): "FP16", np.dtype(np.int64): "INT64",
                np.dtype(np.int32): "INT32", np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "UINT8"}


def source_onnx(engine_path: Path, options: Mapping[str, object], onnx_file_in_manifest: str) -> Path | None:
    """The ONNX file the engine was built from: options.onnx, else the manifest's file next to the engine
    (or next to the engine's symlink target, where engine caches keep it); None when not found."""
    if options.get("onnx"):
        return Path(str(options["onnx"]))
    name = Path(onnx_file_in_manifest).name
    for folder in (engine_path.parent, engine_path.resolve().parent):
        if (folder / name).is_file():
            return folder / name
    return None


class TensorRTBackend(Backend):
    name = "tensorrt"
    platform = "tensorrt_plan"
    on_gpu = True

    def __init__(self, config: ModelConfig, instance_index: int = 0) -> None:
        import tensorrt as trt
        import torch

        from export.tensorrt.manifest import read_manifest
        from export.tensorrt.runtime import load_engine

        options = config.options
        for library in options.get("plugins", []):
            ctypes.CDLL(str(library))  # before deserialisation (serving-reference §C.5)
        engine_path = Path(config.artifact)
        manifest = read_manifest(engine_path)
        onnx_path = source_onnx(engine_path, options, manifest.onnx_file)
        if onnx_path is not None and not onnx_path.is_file():
            raise FileNotFoundError(f"model {config.name!r}: options.onnx {onnx_path} does not exist")
        self.engine = load_engine(engine_path, trt=trt, onnx_path=onnx_path)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self._trt, self._torch = trt, torch
        self._inputs, self._outputs = [], []
        for index in range(self.engine.num_io_tensors):
            tensor = self.engine.get_tensor_name(index)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(tensor)))
            spec = TensorSpec(tensor, _NUMPY_TO_V2.get(dtype, "FP32"), tuple(self.engine.get_tensor_shape(tensor)))
            is_input = self.engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs).append(spec)
        if onnx_path is not None:
            self._metadata = onnx_props(onnx_path)
        elif manifest.arch:
            outputs = tuple(o.name for o in self._outputs)
            self._metadata = ArtifactMetadata.for_arch(manifest.arch, outputs).to_props()
        else:
            raise ValueError(f"model {config.name!r}: neither the source ONNX nor the manifest's arch is known; "
                             "set options.onnx")

    def infer(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        torch, trt = self._torch, self._trt
        keep_alive = []
        for name, array in inputs.items():
            tensor = torch.from_numpy(np.ascontiguousarray(array)).cuda()
            keep_alive.append(tensor)
            self.context.set_input_shape(name, tuple(array.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for spec in self._outputs:
            shape = tuple(self.context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise NotImplementedError(f"output {spec.name!r} has a data-dependent shape {shape}")
            dtype = torch.from_numpy(np.zeros(0, dtype=trt.nptype(self.engine.get_tensor_dtype(spec.name)))).dtype
            buffer = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(spec.name, buffer.data_ptr())
            outputs[spec.name] = buffer
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        self.stream.synchronize()
        return {name: outputs[name].cpu().numpy() for name in output_names}
