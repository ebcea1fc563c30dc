"""Post-training calibration of the scene models' output logits, on scenes of training digits.

Thin strokes bias both scene models towards "not ink": Mask R-CNN learns soft mask targets (a 28×28
RoIAlign of a stroke one or two pixels wide rarely reaches 0.5), so its masks come out thinner than
the digits; the segmenter calls the thin edge of small digits background. Both are corrected the
way a decision threshold is tuned, without touching the serving path: one scalar offset is added to
the final layer's bias (mask logits up, background logit down), chosen on a grid to maximise the
task's own figure on calibration scenes. Those scenes use training digits only (held-out-style
rendering, their own seed), so the held-out figures stay untouched by the choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from demo import data, evaluate
from models.demo.archs import SCENE_HW, SEG_NUM_CLASSES

CALIBRATION_SEED = 77
CALIBRATION_SCENES = 200
MASK_OFFSETS = tuple(np.round(np.arange(0.0, 3.01, 0.25), 2))
BACKGROUND_OFFSETS = tuple(np.round(np.arange(0.0, 3.01, 0.25), 2))


@dataclass(frozen=True)
class Calibration:
    """The chosen offset and the calibration figure at every offset tried (for the training log)."""

    offset: float
    figures: dict[float, float]


def calibration_scenes(count: int = CALIBRATION_SCENES) -> list[data.Scene]:
    """Scenes built from training digits, rendered like the held-out ones (never the held-out digits)."""
    return data.scenes("train", count, seed=CALIBRATION_SEED, hw=SCENE_HW)


def _choose(offsets: Sequence[float], figure_at: Callable[[float], float]) -> Calibration:
    """The offset with the best figure; ties go to the smallest offset (the least change)."""
    figures = {float(offset): figure_at(float(offset)) for offset in offsets}
    best = max(figures.values())
    return Calibration(min(o for o, f in figures.items() if f == best), figures)


def calibrate_detector_masks(
    model, scenes: Sequence[data.Scene], offsets: Sequence[float] = MASK_OFFSETS
) -> Calibration:
    """Raise every class's mask logit by the offset that maximises mask mAP on `scenes` (in place)."""
    import torch

    bias = model.roi_heads.mask_predictor.mask_fcn_logits.bias
    trained = bias.detach().clone()

    def mask_map_at(offset: float) -> float:
        with torch.no_grad():
            bias.copy_(trained + offset)
        return evaluate.coco_map(scenes, evaluate.predict_detections(model, scenes))["segm_mAP"]

    chosen = _choose(offsets, mask_map_at)
    with torch.no_grad():
        bias.copy_(trained + chosen.offset)
    return chosen


def calibrate_segmenter_background(
    model, scenes: Sequence[data.Scene], offsets: Sequence[float] = BACKGROUND_OFFSETS
) -> Calibration:
    """Lower the background logit by the offset that maximises the majority-label figure on `scenes`
    (ties: the smaller offset, which keeps strokes thinner and mIoU higher); in place."""
    import torch

    bias = model.decode_head.conv_seg.bias
    trained = bias.detach().clone()
    targets = [item.semantic_map() for item in scenes]

    def majority_at(offset: float) -> float:
        with torch.no_grad():
            bias.copy_(trained)
            bias[0] -= offset
        maps = evaluate.predict_segmentation(model, scenes)
        # mIoU only breaks exact ties of the majority figure (it is below 1 % of one digit).
        return evaluate.majority_label_accuracy(maps, scenes) + 1e-4 * evaluate.mean_iou(maps, targets, SEG_NUM_CLASSES)

    chosen = _choose(offsets, majority_at)
    with torch.no_grad():
        bias.copy_(trained)
        bias[0] -= chosen.offset
    return chosen


def calibrate_arch(arch: str, model, count: int = CALIBRATION_SCENES) -> Calibration | None:
    """The calibration a demo scene arch gets after training (None for the classifier); in place."""
    if arch == "demo_digits_det":
        return calibrate_detector_masks(model, calibration_scenes(count))
    if arch == "demo_digits_seg":
        return calibrate_segmenter_background(model, calibration_scenes(count))
    return None
