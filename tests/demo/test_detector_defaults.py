"""The demo detector's defaults: one NMS over all classes, so one digit never comes back with two labels.

The official archs keep mmdet's class-wise NMS (tests/models/test_detection.py covers them); the demo
detector is built with `class_agnostic_nms`, and the choice lives inside the model, so the exported
ONNX graph carries it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import box_iou, nms

from models.demo.archs import DET_NUM_CLASSES, DETECTION_SCORE_THRESHOLD
from models.registry import get_arch

pytest.importorskip("models.detection.mask_rcnn")


class FixedPredictor(nn.Module):
    """Box predictor stand-in: fixed class logits per proposal and no box regression."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logits, torch.zeros(self.logits.shape[0], self.logits.shape[1] * 4)


def _logits(top_class: list[int], confidence: float = 6.0) -> torch.Tensor:
    """One row per proposal: background 0, the given class (0-based digit) `confidence`, the rest 0."""
    logits = torch.zeros(len(top_class), DET_NUM_CLASSES + 1)
    for row, digit in enumerate(top_class):
        logits[row, digit + 1] = confidence - row  # first proposal scores highest
    return logits


def _classify(model, proposals: torch.Tensor, top_class: list[int]):
    """(boxes, scores, labels) of one image's proposals through the model's own bbox-head test."""
    from models.detection.mask_rcnn import ImageRows

    model.roi_heads.box_predictor = FixedPredictor(_logits(top_class))
    levels = [torch.zeros(1, model.backbone.out_channels, 128 // s, 128 // s) for s in (4, 8, 16, 32)]
    rows = ImageRows(torch.zeros(len(proposals), dtype=torch.int64), torch.arange(len(proposals)), proposals)
    with torch.no_grad():
        found = model._classify(levels, rows, (128, 128))
    return found.boxes, found.scores, found.labels


# Two proposals on one digit (IoU 0.82) read as different digits, and one proposal elsewhere.
PROPOSALS = torch.tensor([[10.0, 10.0, 40.0, 50.0], [12.0, 11.0, 41.0, 52.0], [70.0, 60.0, 100.0, 110.0]])
TOP_CLASS = [3, 8, 5]


def test_demo_detector_keeps_one_label_per_place():
    model = get_arch("demo_digits_det").factory().eval()
    assert model.class_agnostic_nms
    boxes, scores, labels = _classify(model, PROPOSALS, TOP_CLASS)
    confident = scores >= DETECTION_SCORE_THRESHOLD
    assert sorted(labels[confident].tolist()) == [3, 5]  # the weaker "8" on the "3" is suppressed

    # Independent reference: torchvision's NMS over every candidate box, ignoring the classes.
    softmax = torch.softmax(_logits(TOP_CLASS), dim=1)[:, 1:]
    candidates = softmax.reshape(-1) > model.roi_heads.score_thresh
    all_boxes = PROPOSALS[:, None, :].expand(-1, DET_NUM_CLASSES, -1).reshape(-1, 4)[candidates]
    all_scores = softmax.reshape(-1)[candidates]
    keep = nms(all_boxes, all_scores, model.roi_heads.nms_thresh)
    torch.testing.assert_close(scores, all_scores[keep])
    torch.testing.assert_close(boxes, all_boxes[keep])
    assert (box_iou(boxes, boxes).fill_diagonal_(0) <= model.roi_heads.nms_thresh).all()


def test_class_wise_nms_stays_the_default_of_build_mask_rcnn():
    """Without the option (the official archs), both labels survive on the one digit, as in mmdet."""
    from models.demo.archs import SCENE_BACKBONE
    from models.detection import build_mask_rcnn

    model = build_mask_rcnn(SCENE_BACKBONE, num_classes=DET_NUM_CLASSES, fpn_channels=16,
                            box_score_thresh=0.05).eval()
    assert not model.class_agnostic_nms
    _, scores, labels = _classify(model, PROPOSALS, TOP_CLASS)
    assert sorted(labels[scores >= DETECTION_SCORE_THRESHOLD].tolist()) == [3, 5, 8]


def test_demo_eval_measures_at_the_rest_default_threshold():
    """`paca demo eval` reports found/precision at the threshold a REST user gets without asking."""
    from service.tasks.detection import DEFAULT_SCORE_THRESHOLD

    assert DETECTION_SCORE_THRESHOLD == DEFAULT_SCORE_THRESHOLD
