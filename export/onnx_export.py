"""`export_onnx`: a PaCa model → one self-contained ONNX file with the custom op, its body and metadata.

Steps (each reported to `progress`): build/load the model → swap the attention cores for the
custom-op module → torch.onnx.export (dynamo) with a dynamic batch (and H/W for dense tasks) and the
detector's per-image NMS as ONNX `NonMaxSuppression` (`export.detection_ops`) →
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
from export.detection_ops import translation_table
from export.metadata import UNKNOWN, ArtifactMetadata, describe_weights, label_names_for, write_metadata
from export.onnx_function import attach_attention_function, custom_nodes, inline_attention
from models.outputs import example_input, wrap_outputs
from models.registry import get_arch
from models.tasks import TaskSpec, output_names

Progress = Callable[[str], None]
TWO_GB = 2 * 1024**3
MIN_OPSET = 18


def load_model(arch: str, checkpoint: str | os.PathLike | None) -> nn.Module:
    """The arch's model in eval mode, with `checkpoint` loaded strictly when given."""
    from models.builder import build

    return build(arch, checkpoint).eval()


def dynamic_shapes(task: TaskSpec) -> tuple[dict[int, object], ...]:
    """Dynamic batch where the task batches (a batch of 1 specialises otherwise); dynamic H/W for dense tasks.

    Detection batches too: its batches hold images of one padded size, and every output is per image."""
    axes: dict[int, object] = {}
    if task.batchable:
        axes[0] = torch.export.Dim("batch", min=1, max=1024)
    if task.dense:
        axes.update({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC})
    return (axes,)


def export_onnx(arch: str, output: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None,
                model: nn.Module | None = None, opset: int = MIN_OPSET, inline: bool = False,
                weights: str | None = None, progress: Progress | None = None) -> Path:
    """Export `arch` (or the given `model` of that arch) to `output`; returns the written path.

    `weights` records where the weights came from (`paca.weights`); by default it is derived from
    `checkpoint` (file name + sha256), `random` when neither a checkpoint nor a model is given.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (LayerNormalization, Resize semantics), got {opset}")
    if model is not None and checkpoint is not None:
        raise ValueError("pass either a model or a checkpoint to load, not both")
    report = progress or (lambda _msg: None)
    spec = get_arch(arch)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)

    report(f"building {arch}")
    if weights is None:
        weights = describe_weights(checkpoint) if model is None else UNKNOWN
    if model is None:
        model = load_model(arch, checkpoint)
    model = model.eval()
    example = example_input(spec)
    wrapper, stages = wrap_outputs(model, example)
    outputs = list(output_names(spec.task, stages))

    report("tracing with the custom PaCaAttention op")
    with custom_attention_cores(model) as swapped, torch.no_grad():
        if swapped == 0:
            raise ValueError(f"{arch}: no PaCaAttentionCore modules found to export as custom ops")
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, opset_version=opset, input_names=["pixel_values"],
            output_names=outputs, dynamic_shapes=dynamic_shapes(spec.task_spec), external_data=False,
            optimize=True, verbose=False, custom_translation_table=translation_table(),
        )
    proto = program.model_proto

    report("attaching the PaCaAttention function body" if not inline else "inlining PaCaAttention")
    if not custom_nodes(proto):
        raise RuntimeError("export produced no paca::PaCaAttention nodes")
    attach_attention_function(proto)
    if inline:
        proto = inline_attention(proto)

    report("writing metadata and checking the graph")
    num_classes = getattr(model, "num_labels", None) or _num_classes(proto)
    metadata = ArtifactMetadata(
        arch=arch, task=spec.task, preprocess=spec.preprocess, labels=spec.labels,
        label_names=label_names_for(spec.labels, num_classes), outputs=tuple(outputs), weights=weights,
        description=spec.description,
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


def _save(proto: onnx.ModelProto, output: Path) -> None:
    """One file; weights go to `<output>.data` only past the 2 GB protobuf limit."""
    if proto.ByteSize() < TWO_GB:
        onnx.save_model(proto, str(output))
    else:
        onnx.save_model(proto, str(output), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=output.name + ".data")
