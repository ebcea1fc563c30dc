"""Backends by name. Each lives in its own module, imported only when a model asks for it."""

from __future__ import annotations

import importlib

from service.backends.base import Backend, TensorSpec
from service.repository import ModelConfig

__all__ = ["Backend", "TensorSpec", "create_backend"]

_MODULES = {
    "onnxruntime": ("service.backends.onnxruntime_backend", "OnnxRuntimeBackend"),
    "tensorrt": ("service.backends.tensorrt_backend", "TensorRTBackend"),
    "torch": ("service.backends.torch_backend", "TorchBackend"),
    "triton": ("service.backends.triton_backend", "RemoteTritonBackend"),
}


def create_backend(config: ModelConfig, instance_index: int = 0) -> Backend:
    module_name, class_name = _MODULES[config.backend]
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class(config, instance_index=instance_index)
