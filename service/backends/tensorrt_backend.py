"""TensorRT backend (GPU): a serialised engine + its manifest, run with execute_async_v3 on torch CUDA buffers.

Thin on purpose: `export.tensorrt.runtime.load_engine` checks the manifest (TensorRT version, compute
capability, source ONNX hash) before deserialising, so a mismatched engine fails at start-up with a clear
message. PaCa engines embed the PaCaAttention kernel (AOT), so loading needs neither the plugin module nor
Triton. Options: onnx (source ONNX file: its metadata describes the model and its hash is checked; default:
the manifest's onnx_file next to the engine or its symlink target, else the manifest's arch from the
registry), plugins (extra plugin libraries to load first).

Each instance owns a CUDA stream and reusable buffers: inputs are staged in pinned host memory and copied
to the device asynchronously on that stream, the engine runs on it, outputs come back the same way, with
one synchronisation per batch. With several instances, one instance's copies overlap another's compute.
Engines with data-dependent output shapes (detection) are refused when the model loads.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

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


def data_dependent_outputs(engine: Any, context: Any, input_names: Sequence[str], output_names: Sequence[str],
                           profile_index: int = 0) -> list[str]:
    """Outputs whose shape stays unknown (-1) once every input has its profile's opt shape: their length
    depends on the data (detections), which needs an output allocator this backend does not have."""
    for name in input_names:
        context.set_input_shape(name, tuple(engine.get_tensor_profile_shape(name, profile_index)[1]))
    return [name for name in output_names if any(d < 0 for d in context.get_tensor_shape(name))]


class StagedIO:
    """Reusable I/O buffers of one execution context: pinned host staging and device tensors, grown on
    demand. Copies are queued (non_blocking) on torch's current stream, which the caller sets."""

    def __init__(self, torch: Any, device: str, pin: bool) -> None:
        self._torch, self._device, self._pin = torch, device, pin
        self._host: dict[str, Any] = {}
        self._dev: dict[str, Any] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}

    def _buffer(self, cache: dict[str, Any], name: str, shape: tuple[int, ...], dtype: Any, *, host: bool) -> Any:
        count = int(np.prod(shape)) if shape else 1
        flat = cache.get(name)
        if flat is None or flat.numel() < count or flat.dtype != dtype:
            if host:
                flat = self._torch.empty(count, dtype=dtype, pin_memory=self._pin)
            else:
                flat = self._torch.empty(count, dtype=dtype, device=self._device)
            cache[name] = flat
        return flat[:count].view(shape)

    def stage_input(self, name: str, array: np.ndarray) -> Any:
        """The device tensor holding `array`; the host→device copy is queued, not waited for."""
        dtype = self._torch.from_numpy(np.empty(0, dtype=array.dtype)).dtype
        host = self._buffer(self._host, name, array.shape, dtype, host=True)
        np.copyto(host.numpy(), array, casting="no")
        device = self._buffer(self._dev, name, array.shape, dtype, host=False)
        device.copy_(host, non_blocking=True)
        return device

    def output(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        return self._buffer(self._dev, name, shape, self._torch.from_numpy(np.empty(0, dtype=dtype)).dtype,
                            host=False)

    def fetch(self, name: str) -> Any:
        """Queue the device→host copy of output `name` (already run through `output`); read after sync."""
        device = self._dev[name]
        host = self._buffer(self._host, f"out:{name}", tuple(self._shapes[name]), device.dtype, host=True)
        host.copy_(device[:host.numel()].view(host.shape), non_blocking=True)
        return host

    def run(self, context: Any, inputs: Mapping[str, np.ndarray], outputs: Sequence[tuple[str, np.dtype]],
            wanted: Sequence[str], execute: Callable[[], bool], synchronize: Callable[[], None]
            ) -> dict[str, np.ndarray]:
        """Stage inputs, bind outputs, execute, copy the wanted outputs back; one synchronisation."""
        for name, array in inputs.items():
            device = self.stage_input(name, np.ascontiguousarray(array))
            context.set_input_shape(name, tuple(array.shape))
            context.set_tensor_address(name, device.data_ptr())
        self._shapes = {}
        for name, dtype in outputs:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"output {name!r} has a data-dependent shape {shape}")
            self._shapes[name] = shape
            context.set_tensor_address(name, self.output(name, shape, dtype).data_ptr())
        if not execute():
            raise RuntimeError("TensorRT execution failed")
        hosts = {name: self.fetch(name) for name in wanted}
        synchronize()
        return {name: host.numpy().copy() for name, host in hosts.items()}  # buffers are reused next batch


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
            ctypes.CDLL(str(library))  # plugin libraries register their creators before deserialisation
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
        self._output_dtypes: list[tuple[str, np.dtype]] = []
        for index in range(self.engine.num_io_tensors):
            tensor = self.engine.get_tensor_name(index)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(tensor)))
            spec = TensorSpec(tensor, _NUMPY_TO_V2.get(dtype, "FP32"), tuple(self.engine.get_tensor_shape(tensor)))
            is_input = self.engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs).append(spec)
            if not is_input:
                self._output_dtypes.append((tensor, dtype))
        dynamic = data_dependent_outputs(self.engine, self.context, [s.name for s in self._inputs],
                                         [s.name for s in self._outputs])
        if dynamic:
            raise ValueError(f"model {config.name!r}: outputs {dynamic} of {engine_path} have data-dependent "
                             "shapes (detections); the tensorrt backend serves fixed-shape outputs only. Serve "
                             "this model with the onnxruntime backend (CUDAExecutionProvider) or torch.")
        self._input_dtypes = {s.name: np.dtype(trt.nptype(self.engine.get_tensor_dtype(s.name)))
                              for s in self._inputs}
        self._io = StagedIO(torch, "cuda", pin=True)
        if onnx_path is not None:
            self._metadata = onnx_props(onnx_path)
        elif manifest.arch:
            outputs = tuple(o.name for o in self._outputs)
            self._metadata = ArtifactMetadata.for_arch(manifest.arch, outputs).to_props()
        else:
            raise ValueError(f"model {config.name!r}: neither the source ONNX nor the manifest's arch is known; "
                             "set options.onnx")

    def infer(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        typed = {name: np.asarray(array, dtype=self._input_dtypes.get(name, array.dtype))
                 for name, array in inputs.items()}
        with self._torch.cuda.stream(self.stream):
            return self._io.run(self.context, typed, self._output_dtypes, output_names,
                                execute=lambda: self.context.execute_async_v3(self.stream.cuda_stream),
                                synchronize=self.stream.synchronize)
