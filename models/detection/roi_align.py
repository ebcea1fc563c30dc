"""mmdet's `SingleRoIExtractor` + mmcv `RoIAlign` (aligned=True by default) on torchvision ops.

torchvision's `MultiScaleRoIAlign` always samples with aligned=False (half a feature cell off) and
infers the level scales from the image size; here every level uses `roi_align(aligned=True)` with its
true stride, adaptive sampling (sampling_ratio 0), and mmdet's level rule.
"""

from __future__ import annotations

import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

FINEST_SCALE = 56  # mmdet SingleRoIExtractor default


def mmdet_roi_levels(boxes: torch.Tensor, num_levels: int, finest_scale: int = FINEST_SCALE) -> torch.Tensor:
    """Level of each (x1, y1, x2, y2) box: ⌊log2(√area / finest_scale + 1e-6)⌋ clamped to [0, L−1]."""
    scale = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).to(torch.int64)


class AlignedMultiScaleRoIAlign(MultiScaleRoIAlign):
    """Drop-in for torchvision's pooler (same forward signature) with mmdet/mmcv semantics."""

    def __init__(self, featmap_names: list[str], output_size: int, strides: tuple[int, ...] = (4, 8, 16, 32),
                 sampling_ratio: int = 0) -> None:
        super().__init__(featmap_names, output_size, sampling_ratio)
        if len(strides) != len(featmap_names):
            raise ValueError(f"{len(featmap_names)} feature maps but {len(strides)} strides")
        self.strides = tuple(strides)

    def pool(self, features: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        """(R, C, out, out) for the boxes of every image (R = total boxes, in the order given)."""
        rois = torch.cat(
            [torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)], dim=0
        )
        return self.pool_rois(features, rois)

    def pool_rois(self, features: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """(R, C, out, out) for rois (R, 5) = (image index, x1, y1, x2, y2); each RoI reads only its image."""
        levels = mmdet_roi_levels(rois[:, 1:], len(features))
        pooled, order = [], []
        for level, (feature, stride) in enumerate(zip(features, self.strides, strict=True)):
            index = torch.where(levels == level)[0]
            pooled.append(roi_align(feature, rois[index], self.output_size, spatial_scale=1.0 / stride,
                                    sampling_ratio=self.sampling_ratio, aligned=True))
            order.append(index)
        # Put each RoI back in its input position (inverse of the level grouping).
        return torch.cat(pooled)[torch.argsort(torch.cat(order))]

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        return self.pool([x[name] for name in self.featmap_names], boxes)
