"""PyTorch eager backend: `models.build(arch, checkpoint)` wrapped to the artifact's output layout.

Options: device ("cpu" default, or "cuda"), threads (torch intra-op threads on CPU), triton_attention (on CUDA,
default True: swap every PaCaAttentionCore for the fused OpenAI-Triton kernel from models/kernels when present).
torch is imported here only, so choosing another backend never loads it. The module run is the one export
traces (`models.outputs.wrap_outputs`), so torch and ONNX artifacts of an arch answer alike.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from export.metadata import ArtifactMetadata, describe_weights
from models.tasks import output_names
from service.backends.base import Backend, TensorSpec, v2_datatype
from service.repository import ModelConfig

log = logging.getLogger("paca.backends.torch")


class TorchBackend(Backend):
    name = "torch"
    platform = "pytorch_libtorch"

    def __init__(self, config: ModelConfig, instance_index: int = 0) -> None:
        import torch

        from models import build, get_arch
        from models.outputs import example_input, wrap_outputs

        if config.arch is None:
            raise ValueError(f"model {config.name!r}: the torch backend needs 'arch'")
        options = config.options
        self.device = torch.device(options.get("device", "cpu"))
        self.on_gpu = self.device.type == "cuda"
        if self.device.type == "cpu" and "threads" in options:
            torch.set_num_threads(int(options["threads"]))
        spec = get_arch(config.arch)
        model = build(config.arch, config.checkpoint).to(self.device).eval()
        self.fused_attention = 0
        if self.device.type == "cuda" and options.get("triton_attention", True):
            try:
                from models.kernels.torch_ops import use_triton_attention

                self.fused_attention = use_triton_attention(model)
            except ImportError as exc:
                log.warning("model %s: Triton attention kernel unavailable (%s); using eager attention",
                            config.name, exc)
        task = spec.task_spec
        example = example_input(spec).to(self.device)
        self.module, stages = wrap_outputs(model, example)
        self.output_names = list(output_names(spec.task, stages))
        fixed = spec.preprocess.fixed_input_size
        batch = -1 if task.batchable else 1
        self._inputs = [TensorSpec("pixel_values", "FP32", (batch, 3, *(fixed or (-1, -1))))]
        self._outputs = self._describe_outputs(torch, example, dense=task.dense and task.batchable)
        metadata = ArtifactMetadata.for_arch(spec.name, self.output_names, weights=describe_weights(config.checkpoint),
                                             exporter_version="torch-eager")
        self._metadata = metadata.to_props()
        self._torch = torch

    def _describe_outputs(self, torch, example, *, dense: bool) -> list[TensorSpec]:
        """Shapes from one example run: the leading dim and (dense batched outputs) spatial dims are -1."""
        with torch.inference_mode():
            results = self.module(example)
        specs = []
        for name, result in zip(self.output_names, results, strict=True):
            shape = [-1, *result.shape[1:]]
            if dense and len(shape) == 4:
                shape[2:] = [-1, -1]
            specs.append(TensorSpec(name, v2_datatype(np.dtype(str(result.dtype).removeprefix("torch."))),
                                    tuple(int(d) for d in shape)))
        return specs

    def infer(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        torch = self._torch
        pixel_values = torch.from_numpy(np.ascontiguousarray(inputs["pixel_values"])).to(self.device)
        with torch.inference_mode():
            results = self.module(pixel_values)
        by_name = dict(zip(self.output_names, results, strict=True))
        return {name: by_name[name].detach().cpu().numpy() for name in output_names}
