"""PyTorch eager backend: `models.build(arch, checkpoint)` wrapped to the ONNX artifact's output layout.

Options: device ("cpu" default, or "cuda"), threads (torch intra-op threads on CPU), triton_attention (on CUDA,
default True: swap every PaCaAttentionCore for the fused OpenAI-Triton kernel from models/kernels when present).
torch is imported here only, so choosing another backend never loads it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from service.backends.base import Backend, TensorSpec, v2_datatype
from service.repository import ModelConfig

log = logging.getLogger("paca.backends.torch")

MAIN_OUTPUTS = {
    "classification": ("logits",),
    "segmentation": ("seg_logits",),
    "detection": ("boxes", "scores", "labels", "mask_probs"),
}


class TorchBackend(Backend):
    name = "torch"
    platform = "pytorch_libtorch"

    def __init__(self, config: ModelConfig, instance_index: int = 0) -> None:
        import torch

        from models import build, get_arch
        from models.labels import load_labels
        from models.outputs import ClusterOutputsWrapper, DetectionWrapper, cluster_stages_of

        if config.arch is None:
            raise ValueError(f"model {config.name!r}: the torch backend needs 'arch'")
        options = config.options
        self.device = torch.device(options.get("device", "cpu"))
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
        self.task = spec.task
        if spec.task == "detection":
            backbone_config = getattr(getattr(model, "backbone", None), "config", None)
            stages = tuple(i + 1 for i, m in enumerate(backbone_config.clusters) if m > 0) if (
                backbone_config is not None and hasattr(model, "forward_raw_with_clusters")) else ()
            self.module = DetectionWrapper(model, stages).eval()
        else:
            height, width = spec.preprocess.fixed_input_size or (64, 64)
            example = torch.zeros(2, 3, height, width, device=self.device)
            stages = cluster_stages_of(model, example)
            self.module = ClusterOutputsWrapper(model, stages).eval()
        self.output_names = [*MAIN_OUTPUTS[spec.task], *(f"clusters_stage{i}" for i in stages)]
        fixed = spec.preprocess.fixed_input_size
        batch = 1 if spec.task == "detection" else -1
        self._inputs = [TensorSpec("pixel_values", "FP32", (batch, 3, *(fixed or (-1, -1))))]
        self._outputs = self._describe_outputs(torch, fixed)
        labels = load_labels(spec.labels)
        self._metadata = {
            "paca.arch": spec.name, "paca.task": spec.task, "paca.preprocess": spec.preprocess.to_json(),
            "paca.labels": spec.labels, "paca.label_names": json.dumps(labels),
            "paca.outputs": json.dumps(self.output_names), "paca.exporter_version": "torch-eager",
        }
        self._torch = torch

    def _describe_outputs(self, torch, fixed: tuple[int, int] | None) -> list[TensorSpec]:
        """Shapes from one example run: the leading dim and (variable-size models) spatial dims are -1."""
        height, width = fixed or (64, 64)
        batch = 1 if self.task == "detection" else 2
        with torch.inference_mode():
            results = self.module(torch.zeros(batch, 3, height, width, device=self.device))
        specs = []
        for name, result in zip(self.output_names, results, strict=True):
            shape = [-1, *result.shape[1:]]
            if fixed is None and self.task != "detection" and len(shape) == 4:
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

