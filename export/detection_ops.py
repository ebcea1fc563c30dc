"""ONNX translations of the detector's own torch ops, passed to `torch.onnx.export(custom_translation_table=…)`.

`paca::batched_nms` (models.detection.per_image) becomes one standard `NonMaxSuppression` node whose
batch axis is the image batch: ONNX runs it image by image, rows (image, class 0, index) come out
image-major and, within an image, in selection order (score descending), which is the op's contract.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from onnxscript import opset18 as op
from onnxscript.onnx_types import FLOAT, INT64

from models.detection.per_image import CANDIDATE_FLOOR

INT64_MAX = 0x7FFFFFFFFFFFFFFF  # keep every box that survives (no per-class cap)


def batched_nms_onnx(boxes: FLOAT, scores: FLOAT, iou_threshold: float) -> INT64:
    """boxes (B, N, 4), scores (B, N) → (S, 2) rows (image, index); scores ≤ CANDIDATE_FLOOR are no candidates."""
    selected = op.NonMaxSuppression(
        boxes,
        op.Unsqueeze(scores, [1]),  # (B, 1 class, N)
        op.Constant(value_ints=[INT64_MAX]),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[CANDIDATE_FLOOR]),
    )
    image = op.Slice(selected, [0], [1], [1])
    index = op.Slice(selected, [2], [3], [1])
    return op.Concat(image, index, axis=1)


def translation_table() -> dict[Callable, Callable]:
    """Torch op → ONNX Script translation for every custom op a PaCa model may contain."""
    import models.detection.per_image  # noqa: F401  (registers torch.ops.paca.batched_nms)

    return {torch.ops.paca.batched_nms.default: batched_nms_onnx}
