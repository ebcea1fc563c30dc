"""Per-image steps of a batched detector: NMS that never mixes images, ranks within an image, padding.

A batch of same-size images runs as one graph, yet every image must get exactly the detections it gets
alone. Each step here is per image by construction: NMS runs image by image (ONNX `NonMaxSuppression`
takes a batch axis; eager PyTorch loops), the mmcv coordinate offsets use each image's own maximum, and
variable-length results are kept as flat image-major rows (image, rank) until they are padded to a fixed
number of rows per image. Scores of entries that are not candidates are set to `ABSENT` (< 0); real
scores (sigmoid or softmax) are never negative.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import boxes as box_ops

ABSENT = -1.0  # score of an entry that is not an NMS candidate
CANDIDATE_FLOOR = -0.5  # NMS keeps scores above this: every real score, no ABSENT one


@torch.library.custom_op("paca::batched_nms", mutates_args=())
def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS of each image on its own: boxes (B, N, 4), scores (B, N) → kept (S, 2) int64 rows (image, index).

    Rows are image-major and, within an image, in NMS order (score descending) — the layout of ONNX
    `NonMaxSuppression`, which is what the export emits (`export.detection_ops`). Entries scoring ≤
    CANDIDATE_FLOOR are not candidates. Eagerly, torchvision's `nms` runs on each image's candidates.
    """
    rows = []
    for image in range(boxes.shape[0]):
        candidates = torch.where(scores[image] > CANDIDATE_FLOOR)[0]
        keep = candidates[box_ops.nms(boxes[image, candidates], scores[image, candidates], iou_threshold)]
        rows.append(torch.stack([torch.full_like(keep, image), keep], dim=1))
    if not rows:
        return torch.zeros((0, 2), dtype=torch.int64, device=boxes.device)
    return torch.cat(rows)


@batched_nms.register_fake
def _batched_nms_shape(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept, 2), dtype=torch.int64)


def mmcv_offsets(boxes: torch.Tensor, candidates: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """mmcv's batched-NMS offsets, per image: group · (the image's largest candidate coordinate + 1).

    boxes (B, …, 4), candidates (B, …) bool, groups broadcastable to (B, …). The maximum covers only the
    image's candidates and 0 — exactly the value `max(cat([candidate_boxes.flatten(), 0]))` that one
    image alone gives, so offset boxes (and NMS decisions) do not depend on the other images.
    """
    batch = boxes.shape[0]
    masked = torch.where(candidates[..., None], boxes, torch.zeros_like(boxes))
    largest = masked.reshape(batch, -1).amax(dim=1).clamp(min=0)
    shape = (batch,) + (1,) * (candidates.dim() - 1)
    return groups.to(boxes.dtype) * (largest.reshape(shape) + 1)


def nms_per_image(boxes: torch.Tensor, scores: torch.Tensor, candidates: torch.Tensor, groups: torch.Tensor,
                  iou_threshold: float) -> torch.Tensor:
    """Group-wise NMS by mmcv's offset trick, image by image: inputs (B, N, …) → kept rows (image, index).

    One NMS call per batch; identical to mmcv's `batched_nms` below its 10,000-box split threshold, which
    is where mmcv uses the same trick.
    """
    offset = boxes + mmcv_offsets(boxes, candidates, groups)[..., None]
    masked = torch.where(candidates, scores, torch.full_like(scores, ABSENT))
    batch = boxes.shape[0]
    return batched_nms(offset.reshape(batch, -1, 4), masked.reshape(batch, -1), iou_threshold)


def rank_within_image(image: torch.Tensor, batch: int | torch.SymInt) -> torch.Tensor:
    """Position of each row among its image's rows, for image-major rows (image ascending)."""
    counts = count_per_image(image, batch)
    first_row = torch.cumsum(counts, 0) - counts
    return torch.arange(image.shape[0], device=image.device) - first_row[image]


def pad_per_image(values: torch.Tensor, image: torch.Tensor, rank: torch.Tensor, batch: int | torch.SymInt,
                  rows: int) -> torch.Tensor:
    """Flat rows (K, …) → (B, rows, …), row `rank` of image `image`; zeros elsewhere. Needs rank < rows.

    Rows are scattered as (K, F) so that the ONNX scatter always has a trailing axis."""
    trailing = values.shape[1:]
    flat = values.reshape(values.shape[0], math.prod(trailing))  # not -1: K may be 0
    padded = flat.new_zeros((batch, rows, flat.shape[1])).index_put((image, rank), flat)
    return padded.reshape(batch, rows, *trailing)


def count_per_image(image: torch.Tensor, batch: int | torch.SymInt) -> torch.Tensor:
    """(B,) int64: how many rows each image has."""
    return torch.zeros(batch, dtype=torch.int64, device=image.device).scatter_add(0, image, torch.ones_like(image))
