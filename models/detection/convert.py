"""Official mmdet Mask R-CNN state_dict → our torchvision-based model (key table: docs/downstream-models.md).

Pure renaming except three heads whose class axis differs: mmdet puts background LAST in `fc_cls`
(81 rows) and has no background rows in `fc_reg` (4·80) or `conv_logits` (80 channels); torchvision
puts background FIRST and has rows/channels for it. Works for any class count (the demo too).
"""

from __future__ import annotations

import re

import torch

StateDict = dict[str, torch.Tensor]

# (pattern on the mmdet key, replacement) for the plain renames; first match wins.
RENAMES: tuple[tuple[str, str], ...] = (
    (r"^backbone\.", "backbone.body."),
    (r"^neck\.lateral_convs\.(\d+)\.conv\.", r"backbone.fpn.inner_blocks.\1.0."),
    (r"^neck\.fpn_convs\.(\d+)\.conv\.", r"backbone.fpn.layer_blocks.\1.0."),
    (r"^rpn_head\.rpn_conv\.", "rpn.head.conv.0.0."),
    (r"^rpn_head\.rpn_cls\.", "rpn.head.cls_logits."),
    (r"^rpn_head\.rpn_reg\.", "rpn.head.bbox_pred."),
    (r"^roi_head\.bbox_head\.shared_fcs\.0\.", "roi_heads.box_head.fc6."),
    (r"^roi_head\.bbox_head\.shared_fcs\.1\.", "roi_heads.box_head.fc7."),
    (r"^roi_head\.bbox_head\.fc_cls\.", "roi_heads.box_predictor.cls_score."),
    (r"^roi_head\.bbox_head\.fc_reg\.", "roi_heads.box_predictor.bbox_pred."),
    (r"^roi_head\.mask_head\.convs\.(\d+)\.conv\.", r"roi_heads.mask_head.\1.0."),
    (r"^roi_head\.mask_head\.upsample\.", "roi_heads.mask_predictor.conv5_mask."),
    (r"^roi_head\.mask_head\.conv_logits\.", "roi_heads.mask_predictor.mask_fcn_logits."),
)
MMDET_PREFIXES = ("neck.", "rpn_head.", "roi_head.")


def background_last_to_first(rows: torch.Tensor) -> torch.Tensor:
    """fc_cls (C+1, …) with background at row C → background at row 0, class j at row j + 1."""
    return torch.cat([rows[-1:], rows[:-1]])


def prepend_zero_rows(rows: torch.Tensor, count: int) -> torch.Tensor:
    """Add `count` zero rows in front (the never-used background regression rows / mask channel)."""
    return torch.cat([rows.new_zeros((count, *rows.shape[1:])), rows])


def rename_key(key: str) -> str:
    for pattern, replacement in RENAMES:
        new_key, hits = re.subn(pattern, replacement, key)
        if hits:
            return new_key
    return key  # unknown keys pass through and are reported by the strict loader


def convert_mmdet_mask_rcnn(state_dict: StateDict) -> StateDict:
    """Map an mmdet checkpoint onto our keys; a state_dict already in our layout is returned unchanged."""
    if not any(key.startswith(MMDET_PREFIXES) for key in state_dict):
        return state_dict
    converted: StateDict = {}
    for key, value in state_dict.items():
        new_key = rename_key(key)
        if new_key.startswith("roi_heads.box_predictor.cls_score."):
            value = background_last_to_first(value)
        elif new_key.startswith("roi_heads.box_predictor.bbox_pred."):
            value = prepend_zero_rows(value, 4)
        elif new_key.startswith("roi_heads.mask_predictor.mask_fcn_logits."):
            value = prepend_zero_rows(value, 1)
        converted[new_key] = value
    return converted
