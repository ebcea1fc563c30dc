"""ONNX Runtime backend: CPU by default; CUDA / TensorRT execution providers when installed and asked for.

Options (repository `options:`): intra_op_threads (default 1), inter_op_threads (1), allow_spinning
(default False: with spinning, sustained full CPU load fell into slow phases, ≈75 vs ≈48 ms per image),
providers (list; default ["CPUExecutionProvider"]), graph_optimization ("all" | "extended" | "basic" | "disable").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from service.backends.base import Backend, TensorSpec
from service.repository import ModelConfig

log = logging.getLogger("paca.backends.onnxruntime")

_ORT_TYPES = {
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
}
_OPTIMIZATION = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


def _dims(shape: Sequence[object]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    platform = "onnxruntime_onnx"

    def __init__(self, config: ModelConfig, instance_index: int = 0) -> None:
        options = config.options
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = int(options.get("intra_op_threads", 1))
        session_options.inter_op_num_threads = int(options.get("inter_op_threads", 1))
        spinning = "1" if options.get("allow_spinning", False) else "0"
        session_options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        session_options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        session_options.graph_optimization_level = _OPTIMIZATION[options.get("graph_optimization", "all")]
        available = set(ort.get_available_providers())
        wanted = list(options.get("providers", ["CPUExecutionProvider"]))
        providers = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        missing = [p for p in wanted if p not in available]
        if missing:
            log.warning("model %s: execution providers %s are not installed; using %s", config.name, missing,
                        providers)
        self.session = ort.InferenceSession(str(config.artifact), session_options, providers=providers)
        self._inputs = [
            TensorSpec(i.name, _ORT_TYPES.get(i.type, "FP32"), _dims(i.shape)) for i in self.session.get_inputs()
        ]
        self._outputs = [
            TensorSpec(o.name, _ORT_TYPES.get(o.type, "FP32"), _dims(o.shape)) for o in self.session.get_outputs()
        ]
        self._metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.providers = self.session.get_providers()
        self.on_gpu = any(p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in self.providers)

    def infer(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        names = list(output_names)
        results = self.session.run(names, dict(inputs))
        return dict(zip(names, results, strict=True))

    def close(self) -> None:
        del self.session
