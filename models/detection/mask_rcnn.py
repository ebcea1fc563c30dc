"""Mask R-CNN on a PaCa-ViT + FPN backbone: torchvision's modules, mmdet's test-time behaviour.

Every inference difference from mmdet that torchvision's settings cannot remove is fixed here or in the
modules it uses (docs/downstream-models.md, 'What matches mmdet'): unrounded anchors with fixed strides
(`anchors`), aligned RoIAlign with adaptive sampling on both poolers (`roi_align`), symmetric dw/dh clamp
(`box_coder`), mmdet's small-box rules (RPN keeps w > 0 and h > 0; no filter on final boxes) and the mmdet
mask paste (`models.postprocess.paste_masks`). Resizing and normalisation happen outside the model (the
service's PreprocessSpec). PaCa has no padding mask, so its features depend on the padding: a batch holds
only images of one padded size (same padding, same features), and every step after the backbone is per
image (`models.detection.per_image`), so an image's detections are those it gets alone, padded to
`detections_per_img` rows plus a count.

Class layout: 81 classes, torchvision style (index 0 = background, index j = label-set class j − 1).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import boxes as box_ops

from models.config import PaCaConfig
from models.detection.anchors import ANCHOR_SIZES, ASPECT_RATIOS, FPN_STRIDES, FixedStrideAnchorGenerator
from models.detection.backbone import PaCaFPNBackbone
from models.detection.box_coder import SymmetricClampBoxCoder
from models.detection.per_image import count_per_image, nms_per_image, pad_per_image, rank_within_image
from models.detection.roi_align import AlignedMultiScaleRoIAlign
from models.postprocess import paste_masks

# boxes (B, D, 4), scores (B, D), labels (B, D) int64, mask_probs (B, D, 28, 28), num_detections (B,) int64
RawDetections = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class ImageRows(NamedTuple):
    """Variable-length per-image boxes as flat rows, image-major: row i is row `rank[i]` of image `image[i]`."""

    image: torch.Tensor  # (R,) int64
    rank: torch.Tensor  # (R,) int64
    boxes: torch.Tensor  # (R, 4)


class Detections(NamedTuple):
    """`ImageRows` of detections, with their scores and 0-based label-set labels."""

    image: torch.Tensor  # (K,) int64
    rank: torch.Tensor  # (K,) int64, < detections_per_img
    boxes: torch.Tensor  # (K, 4)
    scores: torch.Tensor  # (K,)
    labels: torch.Tensor  # (K,) int64

# mmdet test configuration of the official detectors (mmdet 3.x `mask-rcnn_r50_fpn.py` test_cfg and Resize).
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


def _check_images(pixel_values: torch.Tensor) -> None:
    if pixel_values.dim() != 4 or pixel_values.shape[1] != 3 or pixel_values.shape[0] < 1:
        raise ValueError(
            f"expected pixel_values of shape (B, 3, H, W) with B >= 1 (images of one padded size), "
            f"got {tuple(pixel_values.shape)}"
        )


def _rois(rows: ImageRows | Detections) -> torch.Tensor:
    """(R, 5) RoIs: image index, then the box."""
    return torch.cat([rows.image[:, None].to(rows.boxes.dtype), rows.boxes], dim=1)


def pad_to_multiple(image: torch.Tensor, divisor: int) -> torch.Tensor:
    """Pad (…, H, W) bottom/right with zeros to multiples of `divisor` (no-op when already padded)."""
    height, width = image.shape[-2:]
    return F.pad(image, (0, (-width) % divisor, 0, (-height) % divisor))


class PaCaMaskRCNN(MaskRCNN):
    """torchvision `MaskRCNN` whose eval path reproduces the official mmdet detector.

    - `forward_raw(pixel_values (B,3,H,W), image_hw)`: the exported inference graph (B images of one size).
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
        """Padded, normalised images of one size (B, 3, H, W) → per image D = `detections_per_img` rows:
        boxes (B, D, 4), scores (B, D), labels (B, D), mask_probs (B, D, 28, 28), num_detections (B,).

        Image b's first `num_detections[b]` rows are its detections, best first; the other rows are zeros
        (score 0). `image_hw` is the unpadded (resized) size shared by the batch; boxes are clipped to it
        and stay in that pixel frame. Labels are 0-based label-set indices; mask_probs are the sigmoid
        28×28 RoI masks of each box's own class, not pasted. Each image's rows are the ones it gets alone.
        """
        _check_images(pixel_values)
        return self._detect(self.backbone(pixel_values), image_hw)

    def forward_raw_with_clusters(
        self, pixel_values: torch.Tensor, image_hw: tuple[int, int]
    ) -> tuple[RawDetections, list[torch.Tensor | None]]:
        """`forward_raw` plus the backbone's per-stage cluster assignments (B, M_i, H_i, W_i) or None."""
        _check_images(pixel_values)
        pyramid, assignments = self.backbone.forward_with_clusters(pixel_values)
        return self._detect(pyramid, image_hw), assignments

    def forward_with_clusters(self, pixel_values: torch.Tensor) -> tuple[RawDetections, list[torch.Tensor | None]]:
        """`forward_raw_with_clusters` for an input without padding (image size = input size)."""
        return self.forward_raw_with_clusters(pixel_values, (pixel_values.shape[-2], pixel_values.shape[-1]))

    def _detect(self, pyramid: dict[str, torch.Tensor], image_hw: tuple[int, int]) -> RawDetections:
        levels = list(pyramid.values())
        batch = levels[0].shape[0]
        found = self._classify(levels[:4], self._proposals(levels, image_hw), image_hw)
        mask_probs = self._mask_probs(levels[:4], found)
        rows = self.roi_heads.detections_per_img

        def pad(values: torch.Tensor) -> torch.Tensor:
            return pad_per_image(values, found.image, found.rank, batch, rows)

        return (pad(found.boxes), pad(found.scores), pad(found.labels), pad(mask_probs),
                count_per_image(found.image, batch))

    def _proposals(self, levels: list[torch.Tensor], image_hw: tuple[int, int]) -> ImageRows:
        """mmdet RPN test, per image: per level top-`nms_pre` by score, decode, clip, keep w > 0 and h > 0,
        NMS per level, keep the best `max_per_img`."""
        objectness, deltas = self.rpn.head(levels)
        anchors = self.rpn.anchor_generator.level_anchors(levels)
        pre_nms = self.rpn._pre_nms_top_n["testing"]
        batch = levels[0].shape[0]
        boxes, scores, level_ids = [], [], []
        for level, (logits, level_deltas, level_anchors) in enumerate(zip(objectness, deltas, anchors, strict=True)):
            level_scores = logits.permute(0, 2, 3, 1).reshape(batch, -1)  # (B, H·W·A): location-major, then anchor
            level_deltas = level_deltas.permute(0, 2, 3, 1).reshape(batch, -1, 4)
            level_scores, top = level_scores.topk(torch.sym_min(pre_nms, level_scores.shape[1]), dim=1)
            chosen = torch.gather(level_deltas, 1, top[..., None].expand(-1, -1, 4))
            decoded = self.rpn.box_coder.decode_single(chosen.reshape(-1, 4), level_anchors[top].reshape(-1, 4))
            boxes.append(decoded.reshape(batch, -1, 4))
            scores.append(level_scores.sigmoid())
            level_ids.append(torch.full_like(top, level))
        proposals = box_ops.clip_boxes_to_image(torch.cat(boxes, dim=1), image_hw)
        valid = (proposals[..., 2] > proposals[..., 0]) & (proposals[..., 3] > proposals[..., 1])
        kept = nms_per_image(proposals, torch.cat(scores, dim=1), valid, torch.cat(level_ids, dim=1),
                             self.rpn.nms_thresh)
        image, index = kept[:, 0], kept[:, 1]
        rank = rank_within_image(image, batch)
        best = torch.where(rank < self.rpn._post_nms_top_n["testing"])[0]
        image, index = image[best], index[best]
        return ImageRows(image, rank[best], proposals[image, index])

    def _classify(self, levels: list[torch.Tensor], proposals: ImageRows, image_hw: tuple[int, int]) -> Detections:
        """mmdet bbox head test, per image: softmax, class-specific decode + clip, score > thr, class-wise NMS
        (or one NMS over all classes with `class_agnostic_nms`), top-k. No small-box filter (mmdet keeps
        degenerate border boxes)."""
        heads = self.roi_heads
        batch = levels[0].shape[0]
        features = heads.box_head(heads.box_roi_pool.pool_rois(levels, _rois(proposals)))
        class_logits, box_regression = heads.box_predictor(features)
        num_classes = class_logits.shape[-1]
        scores = F.softmax(class_logits, -1)[:, 1:]  # drop background (torchvision index 0)
        boxes = heads.box_coder.decode_single(box_regression, proposals.boxes).reshape(-1, num_classes, 4)[:, 1:]
        boxes = box_ops.clip_boxes_to_image(boxes, image_hw)
        # Per image (B, proposal rank, class); slots without a proposal are no NMS candidates.
        slots = self.rpn._post_nms_top_n["testing"]
        present = pad_per_image(torch.ones_like(proposals.image, dtype=torch.bool), proposals.image, proposals.rank,
                                batch, slots)
        boxes = pad_per_image(boxes, proposals.image, proposals.rank, batch, slots)
        scores = pad_per_image(scores, proposals.image, proposals.rank, batch, slots)
        labels = torch.arange(num_classes - 1, device=scores.device).expand_as(scores)
        candidates = present[..., None] & (scores > heads.score_thresh)
        groups = torch.zeros_like(labels) if self.class_agnostic_nms else labels
        kept = nms_per_image(boxes, scores, candidates, groups, heads.nms_thresh)
        image, index = kept[:, 0], kept[:, 1]
        rank = rank_within_image(image, batch)
        best = torch.where(rank < heads.detections_per_img)[0]
        image, index = image[best], index[best]
        flat = (image, index)
        return Detections(image, rank[best], boxes.reshape(batch, -1, 4)[flat], scores.reshape(batch, -1)[flat],
                          labels.reshape(batch, -1)[flat])

    def _mask_probs(self, levels: list[torch.Tensor], detections: Detections) -> torch.Tensor:
        """(K, 28, 28) sigmoid masks of each detection's own class."""
        heads = self.roi_heads
        labels = detections.labels
        mask_logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool.pool_rois(levels, _rois(detections))))
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
            boxes, scores, labels, mask_probs, counts = self.forward_raw(padded, (height, width))
            count = int(counts[0])
            boxes, scores, labels, mask_probs = (t[0, :count] for t in (boxes, scores, labels, mask_probs))
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
