"""`export_onnx`: a PaCa model → one self-contained ONNX file with the custom op, its body and metadata.

Steps (each reported to `progress`): build/load the model → swap the attention cores for the
custom-op module → torch.onnx.export (dynamo) with a dynamic batch (and H/W for dense tasks) →
attach the `PaCaAttention` function body (or inline it) → metadata → check → save.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import onnx
import torch
from torch import nn

from export.custom_op import custom_attention_cores
from export.metadata import ArtifactMetadata, label_names_for, main_outputs, write_metadata
from export.onnx_function import attach_attention_function, custom_nodes, inline_attention
from models.outputs import ClusterOutputsWrapper, DetectionWrapper, cluster_stages_of
from models.registry import get_arch

Progress = Callable[[str], None]
TWO_GB = 2 * 1024**3
MIN_OPSET = 18
# Example spatial size for dense tasks: non-square and not a power of two, so nothing specialises.
DENSE_EXAMPLE_HW = (96, 128)


def load_model(arch: str, checkpoint: str | os.PathLike | None) -> nn.Module:
    """The arch's model in eval mode, with `checkpoint` loaded strictly when given."""
    try:
        from models.builder import build
    except ModuleNotFoundError:
        build = None
    if build is not None:
        return build(arch, checkpoint).eval()
    model = get_arch(arch).factory().eval()
    if checkpoint is not None:
        model.load_state_dict(_read_state_dict(Path(checkpoint)), strict=True)
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state


def example_input(task: str, fixed_hw: tuple[int, int] | None) -> torch.Tensor:
    """Batch 2 (batch 1 gets specialised by the exporter, spec §23); detection runs one image."""
    height, width = fixed_hw if fixed_hw is not None else DENSE_EXAMPLE_HW
    batch = 1 if task == "detection" else 2
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


def dynamic_shapes(task: str) -> tuple[dict[int, object], ...]:
    batch = torch.export.Dim("batch", min=1, max=1024)
    if task == "classification":
        return ({0: batch},)
    spatial = {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    if task == "detection":
        return (spatial,)
    return ({0: batch, **spatial},)


def export_onnx(arch: str, output: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None,
                model: nn.Module | None = None, opset: int = MIN_OPSET, inline: bool = False,
                progress: Progress | None = None) -> Path:
    """Export `arch` (or the given `model` of that arch) to `output`; returns the written path."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (LayerNormalization, Resize semantics), got {opset}")
    if model is not None and checkpoint is not None:
        raise ValueError("pass either a model or a checkpoint to load, not both")
    report = progress or (lambda _msg: None)
    spec = get_arch(arch)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)

    report(f"building {arch}")
    if model is None:
        model = load_model(arch, checkpoint)
    model = model.eval()
    example = example_input(spec.task, spec.preprocess.fixed_input_size)
    stages = cluster_stages_of(model, example) if spec.task != "detection" else _detection_cluster_stages(model)
    wrapper_cls = DetectionWrapper if spec.task == "detection" else ClusterOutputsWrapper
    wrapper = wrapper_cls(model, stages).eval()
    output_names = [*main_outputs(spec.task), *(f"clusters_stage{i}" for i in stages)]

    report("tracing with the custom PaCaAttention op")
    with custom_attention_cores(model) as swapped, torch.no_grad():
        if swapped == 0:
            raise ValueError(f"{arch}: no PaCaAttentionCore modules found to export as custom ops")
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, opset_version=opset, input_names=["pixel_values"],
            output_names=output_names, dynamic_shapes=dynamic_shapes(spec.task), external_data=False,
            optimize=True, verbose=False,
        )
    proto = program.model_proto

    report("attaching the PaCaAttention function body" if not inline else "inlining PaCaAttention")
    if not custom_nodes(proto):
        raise RuntimeError("export produced no paca::PaCaAttention nodes")
    attach_attention_function(proto)
    if inline:
        proto = inline_attention(proto)

    report("writing metadata and checking the graph")
    num_classes = getattr(model, "num_labels", None) if spec.task == "detection" else _num_classes(proto)
    metadata = ArtifactMetadata(
        arch=arch, task=spec.task, preprocess=spec.preprocess, labels=spec.labels,
        label_names=label_names_for(spec.labels, num_classes), outputs=tuple(output_names),
    )
    write_metadata(proto, metadata.to_props())
    proto.producer_name = "paca-serve"
    _save(proto, output)
    onnx.checker.check_model(str(output), full_check=True)
    report(f"wrote {output}")
    return output


def _num_classes(proto: onnx.ModelProto) -> int | None:
    """Classes from the main output's static dim 1 (logits / seg_logits)."""
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    return dims[1].dim_value or None


def _detection_cluster_stages(model: nn.Module) -> tuple[int, ...]:
    config = getattr(getattr(model, "backbone", None), "config", None)
    if config is None or not hasattr(model, "forward_raw_with_clusters"):
        return ()
    return tuple(i + 1 for i, m in enumerate(config.clusters) if m > 0)


def _save(proto: onnx.ModelProto, output: Path) -> None:
    """One file; weights go to `<output>.data` only past the 2 GB protobuf limit."""
    if proto.ByteSize() < TWO_GB:
        onnx.save_model(proto, str(output))
    else:
        onnx.save_model(proto, str(output), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=output.name + ".data")
