"""mmdet anchors for torchvision's RPN: float base anchors, fixed strides (torchvision rounds; P6 may get 61)."""

from __future__ import annotations

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

FPN_STRIDES = (4, 8, 16, 32, 64)  # P2..P6
ANCHOR_SIZES = ((32,), (64,), (128,), (256,), (512,))  # mmdet: base size = stride, scale 8
ASPECT_RATIOS = (0.5, 1.0, 2.0)  # height / width


def base_anchors(sizes: tuple[float, ...], ratios: tuple[float, ...]) -> torch.Tensor:
    """Zero-centred (x1, y1, x2, y2) anchors, ratio-major, NOT rounded (mmdet `gen_single_level_base_anchors`).

    For ratio r and size s: h = s·√r, w = s/√r; box = (−w/2, −h/2, w/2, h/2).
    """
    size = torch.tensor(sizes, dtype=torch.float64)
    h_ratios = torch.tensor(ratios, dtype=torch.float64).sqrt()
    widths = (size[None, :] / h_ratios[:, None]).reshape(-1)
    heights = (size[None, :] * h_ratios[:, None]).reshape(-1)
    return (torch.stack([-widths, -heights, widths, heights], dim=1) * 0.5).float()


class FixedStrideAnchorGenerator(AnchorGenerator):
    """torchvision `AnchorGenerator` with mmdet's unrounded cell anchors and the true FPN strides.

    torchvision derives a level's stride as padded_size // feature_size, which gives 61 instead of 64 on
    P6 whenever the padded size / 32 is odd; the anchor centres are (x·stride, y·stride) as in mmdet.
    """

    def __init__(self, sizes: tuple[tuple[int, ...], ...] = ANCHOR_SIZES,
                 aspect_ratios: tuple[float, ...] = ASPECT_RATIOS, strides: tuple[int, ...] = FPN_STRIDES) -> None:
        ratios = (tuple(aspect_ratios),) * len(sizes)
        super().__init__(sizes, ratios)
        if len(strides) != len(sizes):
            raise ValueError(f"{len(sizes)} anchor sizes but {len(strides)} strides")
        self.strides = tuple(strides)
        self.cell_anchors = [base_anchors(tuple(s), tuple(r)) for s, r in zip(sizes, ratios, strict=True)]

    def level_anchors(self, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level (H·W·A, 4) anchors, location-major (row-major y, then x), then anchor."""
        out = []
        for feature, stride, cell in zip(feature_maps, self.strides, self.cell_anchors, strict=True):
            height, width = feature.shape[-2:]
            cell = cell.to(dtype=feature.dtype, device=feature.device)
            shift_x = torch.arange(width, dtype=feature.dtype, device=feature.device) * stride
            shift_y = torch.arange(height, dtype=feature.dtype, device=feature.device) * stride
            grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = torch.stack([grid_x, grid_y, grid_x, grid_y], dim=-1).reshape(-1, 1, 4)
            out.append((shifts + cell[None]).reshape(-1, 4))
        return out

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        anchors = torch.cat(self.level_anchors(feature_maps))
        return [anchors for _ in image_list.image_sizes]

