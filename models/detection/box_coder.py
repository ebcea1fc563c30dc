"""Box delta coding with mmdet's symmetric dw/dh clamp (mmdet `DeltaXYWHBBoxCoder`; torchvision clamps one side)."""

from __future__ import annotations

import math

import torch
from torchvision.models.detection._utils import BoxCoder

MAX_LOG_RATIO = math.log(1000.0 / 16)  # mmdet wh_ratio_clip = 16/1000 → |dw|, |dh| ≤ 4.135


class SymmetricClampBoxCoder(BoxCoder):
    """`DeltaXYWHBBoxCoder.decode` of mmdet: deltas divided by `weights` (= 1/std), dw/dh clamped to
    [−4.135, 4.135] on both sides (torchvision clamps only the upper side), centre/size form, no +1.
    Encoding (training) is torchvision's, unchanged."""

    def __init__(self, weights: tuple[float, float, float, float]) -> None:
        super().__init__(weights, bbox_xform_clip=MAX_LOG_RATIO)

    def decode_single(self, rel_codes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """rel_codes (N, 4·C), boxes (N, 4) → decoded boxes (N, 4·C), with mmdet's arithmetic order."""
        boxes = boxes.to(rel_codes.dtype)
        stds = [1.0 / w for w in self.weights]  # mmdet multiplies by target_stds
        deltas = rel_codes.reshape(rel_codes.shape[0], -1, 4)
        dx, dy = deltas[..., 0] * stds[0], deltas[..., 1] * stds[1]
        dw = (deltas[..., 2] * stds[2]).clamp(min=-self.bbox_xform_clip, max=self.bbox_xform_clip)
        dh = (deltas[..., 3] * stds[3]).clamp(min=-self.bbox_xform_clip, max=self.bbox_xform_clip)
        ctr_x = ((boxes[:, 0] + boxes[:, 2]) * 0.5)[:, None]
        ctr_y = ((boxes[:, 1] + boxes[:, 3]) * 0.5)[:, None]
        widths = (boxes[:, 2] - boxes[:, 0])[:, None]
        heights = (boxes[:, 3] - boxes[:, 1])[:, None]
        new_x, new_y = ctr_x + widths * dx, ctr_y + heights * dy
        new_w, new_h = widths * dw.exp(), heights * dh.exp()
        decoded = torch.stack(
            [new_x - new_w * 0.5, new_y - new_h * 0.5, new_x + new_w * 0.5, new_y + new_h * 0.5], dim=2
        )
        return decoded.flatten(1)
