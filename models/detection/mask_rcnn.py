"""Mask R-CNN on a PaCa-ViT + FPN backbone: torchvision's modules, mmdet's test-time behaviour.

Every inference difference listed in detector-mapping.md §3b is fixed here or in the modules it uses:
unrounded anchors with fixed strides (`anchors`), aligned RoIAlign with adaptive sampling on both poolers
(`roi_align`), symmetric dw/dh clamp (`box_coder`), mmdet's small-box rules (RPN keeps w > 0 and h > 0;
no filter on final boxes) and the mmdet mask paste (`models.postprocess.paste_masks`). Resizing and
normalisation happen outside the model (the service's PreprocessSpec), and inference runs one image per
pass because PaCa features depend on the padding (§5).

Class layout: 81 classes, torchvision style (index 0 = background, index j = label-set class j − 1).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import boxes as box_ops

from models.config import PaCaConfig
from models.detection.anchors import ANCHOR_SIZES, ASPECT_RATIOS, FPN_STRIDES, FixedStrideAnchorGenerator
from models.detection.backbone import PaCaFPNBackbone
from models.detection.box_coder import SymmetricClampBoxCoder
from models.detection.roi_align import AlignedMultiScaleRoIAlign
from models.postprocess import paste_masks

RawDetections = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

# mmdet test configuration of the official detectors (detector-mapping.md §1, §4).
MMDET_TEST_DEFAULTS: dict[str, Any] = {
    "min_size": 800,
    "max_size": 1333,
    "size_divisible": 32,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_train": 1000,
    "rpn_nms_thresh": 0.7,
    "rpn_score_thresh": 0.0,
    "box_score_thresh": 0.05,
    "box_nms_thresh": 0.5,
    "box_detections_per_img": 100,
    "bbox_reg_weights": (10.0, 10.0, 5.0, 5.0),
}


class PassThroughTransform(GeneralizedRCNNTransform):
    """Only pads/batches (training path): images arrive resized and normalised by the PreprocessSpec."""

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None):
        return image, target

    def postprocess(self, result, image_shapes, original_image_sizes):
        return result


def batched_nms_mmdet(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                      iou_threshold: float) -> torch.Tensor:
    """Per-group NMS by mmcv's coordinate offset (offset = group · (max coordinate + 1)); indices by score.

    One NMS call, no data-dependent branch (traceable); identical to mmcv's `batched_nms` below its
    10,000-box split threshold, which is where mmcv uses the same trick.
    """
    max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = groups.to(boxes.dtype) * (max_coordinate + 1)
    return box_ops.nms(boxes + offsets[:, None], scores, iou_threshold)


def _check_single_image(pixel_values: torch.Tensor) -> None:
    if pixel_values.dim() != 4 or pixel_values.shape[0] != 1 or pixel_values.shape[1] != 3:
        raise ValueError(
            f"detection runs one image per pass: expected pixel_values of shape (1, 3, H, W), "
            f"got {tuple(pixel_values.shape)}"
        )


def pad_to_multiple(image: torch.Tensor, divisor: int) -> torch.Tensor:
    """Pad (…, H, W) bottom/right with zeros to multiples of `divisor` (no-op when already padded)."""
    height, width = image.shape[-2:]
    return F.pad(image, (0, (-width) % divisor, 0, (-height) % divisor))


class PaCaMaskRCNN(MaskRCNN):
    """torchvision `MaskRCNN` whose eval path reproduces the official mmdet detector.

    - `forward_raw(pixel_values (1,3,H,W), image_hw)`: the exported inference graph.
    - `forward(images)`: eval → torchvision-style dicts (one image per pass); training → torchvision losses.
    """

    def __init__(self, backbone: PaCaFPNBackbone, num_classes: int, anchor_sizes=ANCHOR_SIZES,
                 class_agnostic_nms: bool = False, **kwargs: Any) -> None:
        anchor_generator = FixedStrideAnchorGenerator(anchor_sizes, ASPECT_RATIOS, FPN_STRIDES)
        levels = ["0", "1", "2", "3"]
        super().__init__(
            backbone,
            num_classes=num_classes + 1,
            rpn_anchor_generator=anchor_generator,
            box_roi_pool=AlignedMultiScaleRoIAlign(levels, 7),
            mask_roi_pool=AlignedMultiScaleRoIAlign(levels, 14),
            **kwargs,
        )
        t = self.transform
        self.transform = PassThroughTransform(t.min_size, t.max_size, [0.0] * 3, [1.0] * 3, t.size_divisible)
        self.rpn.box_coder = SymmetricClampBoxCoder((1.0, 1.0, 1.0, 1.0))
        self.roi_heads.box_coder = SymmetricClampBoxCoder(tuple(self.roi_heads.box_coder.weights))
        self.num_labels = num_classes  # classes of the label set (no background)
        # mmdet's default (False) suppresses overlaps within a class only, so one object can come back
        # with several labels; True runs one NMS over all classes (one box, one label per object).
        self.class_agnostic_nms = class_agnostic_nms

    # ------------------------------------------------------------------------------ inference graph

    def forward_raw(self, pixel_values: torch.Tensor, image_hw: tuple[int, int]) -> RawDetections:
        """One padded, normalised image (1, 3, H, W) → (boxes (K,4), scores (K), labels (K), mask_probs (K,28,28)).

        `image_hw` is the unpadded (resized) size; boxes are clipped to it and stay in that pixel frame.
        Labels are 0-based label-set indices; mask_probs are the sigmoid 28×28 RoI masks of each box's
        own class, not pasted. Shapes depend only on H and W except K (data-dependent, ≤ detections_per_img).
        """
        _check_single_image(pixel_values)
        return self._detect(self.backbone(pixel_values), image_hw)

    def forward_raw_with_clusters(
        self, pixel_values: torch.Tensor, image_hw: tuple[int, int]
    ) -> tuple[RawDetections, list[torch.Tensor | None]]:
        """`forward_raw` plus the backbone's per-stage cluster assignments (1, M_i, H_i, W_i) or None."""
        _check_single_image(pixel_values)
        pyramid, assignments = self.backbone.forward_with_clusters(pixel_values)
        return self._detect(pyramid, image_hw), assignments

    def forward_with_clusters(self, pixel_values: torch.Tensor) -> tuple[RawDetections, list[torch.Tensor | None]]:
        """`forward_raw_with_clusters` for an input without padding (image size = input size)."""
        return self.forward_raw_with_clusters(pixel_values, (pixel_values.shape[-2], pixel_values.shape[-1]))

    def _detect(self, pyramid: dict[str, torch.Tensor], image_hw: tuple[int, int]) -> RawDetections:
        levels = list(pyramid.values())
        proposals = self._proposals(levels, image_hw)
        boxes, scores, labels = self._classify(levels[:4], proposals, image_hw)
        return boxes, scores, labels, self._mask_probs(levels[:4], boxes, labels)

    def _proposals(self, levels: list[torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
        """mmdet RPN test: per level top-`nms_pre` by score, decode, clip, keep w > 0 and h > 0,
        NMS per level, keep the best `max_per_img`."""
        objectness, deltas = self.rpn.head(levels)
        anchors = self.rpn.anchor_generator.level_anchors(levels)
        pre_nms = self.rpn._pre_nms_top_n["testing"]
        boxes, scores, level_ids = [], [], []
        for level, (logits, level_deltas, level_anchors) in enumerate(zip(objectness, deltas, anchors, strict=True)):
            level_scores = logits[0].permute(1, 2, 0).reshape(-1)  # (H·W·A): location-major, then anchor
            level_deltas = level_deltas[0].permute(1, 2, 0).reshape(-1, 4)
            level_scores, top = level_scores.topk(torch.sym_min(pre_nms, level_scores.shape[0]))
            boxes.append(self.rpn.box_coder.decode_single(level_deltas[top], level_anchors[top]))
            scores.append(level_scores.sigmoid())
            level_ids.append(torch.full_like(top, level))
        proposals = box_ops.clip_boxes_to_image(torch.cat(boxes), image_hw)
        all_scores, all_levels = torch.cat(scores), torch.cat(level_ids)
        valid = torch.where((proposals[:, 2] > proposals[:, 0]) & (proposals[:, 3] > proposals[:, 1]))[0]
        proposals, all_scores, all_levels = proposals[valid], all_scores[valid], all_levels[valid]
        keep = batched_nms_mmdet(proposals, all_scores, all_levels, self.rpn.nms_thresh)
        return proposals[keep[: self.rpn._post_nms_top_n["testing"]]]

    def _classify(self, levels: list[torch.Tensor], proposals: torch.Tensor,
                  image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mmdet bbox head test: softmax, class-specific decode + clip, score > thr, class-wise NMS (or one
        NMS over all classes with `class_agnostic_nms`), top-k. No small-box filter (mmdet keeps degenerate
        border boxes)."""
        heads = self.roi_heads
        features = heads.box_head(heads.box_roi_pool.pool(levels, [proposals]))
        class_logits, box_regression = heads.box_predictor(features)
        num_classes = class_logits.shape[-1]
        scores = F.softmax(class_logits, -1)[:, 1:]  # drop background (torchvision index 0)
        boxes = heads.box_coder.decode_single(box_regression, proposals).reshape(-1, num_classes, 4)[:, 1:]
        boxes = box_ops.clip_boxes_to_image(boxes, image_hw)
        labels = torch.arange(num_classes - 1, device=scores.device).expand_as(scores)
        boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
        candidates = torch.where(scores > heads.score_thresh)[0]
        boxes, scores, labels = boxes[candidates], scores[candidates], labels[candidates]
        groups = torch.zeros_like(labels) if self.class_agnostic_nms else labels
        keep = batched_nms_mmdet(boxes, scores, groups, heads.nms_thresh)[: heads.detections_per_img]
        return boxes[keep], scores[keep], labels[keep]

    def _mask_probs(self, levels: list[torch.Tensor], boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        heads = self.roi_heads
        mask_logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool.pool(levels, [boxes])))
        chosen = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels + 1]
        return chosen.sigmoid()

    # ----------------------------------------------------------------------- torchvision-style API

    def forward(self, images: list[torch.Tensor] | torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None):
        """Training: torchvision losses (targets with 1-based labels, 0 = background).

        Eval: for every image (3, H, W), already resized and normalised, a dict with `boxes` (K, 4) in
        that image's pixels, `labels` (K) int64 in torchvision's convention (label-set index + 1),
        `scores` (K) and `masks` (K, 1, H, W) bool, pasted the mmdet way (threshold ≥ 0.5). Images run
        one at a time, each padded bottom/right to `size_divisible`, so a result never depends on the
        other images of the list.
        """
        if self.training:
            return super().forward(images, targets)
        if isinstance(images, torch.Tensor):
            images = list(images.unbind(0)) if images.dim() == 4 else [images]
        results = []
        for image in images:
            if image.dim() != 3:
                raise ValueError(f"expected images of shape (3, H, W), got {tuple(image.shape)}")
            height, width = image.shape[-2:]
            padded = pad_to_multiple(image, self.transform.size_divisible)[None]
            boxes, scores, labels, mask_probs = self.forward_raw(padded, (height, width))
            masks = paste_masks(mask_probs.detach().cpu().numpy(), boxes.detach().cpu().numpy(), (height, width))
            results.append({
                "boxes": boxes,
                "labels": labels + 1,
                "scores": scores,
                "masks": torch.from_numpy(masks)[:, None].to(boxes.device),
            })
        return results


def build_mask_rcnn(backbone: PaCaConfig, num_classes: int = 80, fpn_channels: int = 256,
                    **overrides: Any) -> PaCaMaskRCNN:
    """Randomly initialised PaCa Mask R-CNN in eval mode, configured like the official mmdet detectors.

    `backbone` is used as given (detection keeps the ImageNet cluster counts) minus its classifier;
    `num_classes` counts real classes (the model has one more, background). `overrides` are torchvision
    `MaskRCNN` keyword arguments (e.g. `box_score_thresh`) plus `anchor_sizes` (one tuple per level
    P2..P6) and `class_agnostic_nms` (default False, mmdet's class-wise NMS); `min_size`/`max_size` are
    accepted but unused, since the model never resizes.
    """
    options = {**MMDET_TEST_DEFAULTS, **overrides}
    anchor_sizes = options.pop("anchor_sizes", ANCHOR_SIZES)
    agnostic = bool(options.pop("class_agnostic_nms", False))
    model = PaCaMaskRCNN(PaCaFPNBackbone(backbone, fpn_channels), num_classes, anchor_sizes, agnostic, **options)
    return model.eval()
