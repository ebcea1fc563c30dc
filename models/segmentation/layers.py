"""Building blocks shared by the segmentation heads (mmcv `ConvModule` layout, `resize`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-5


class ConvModule(nn.Module):
    """Conv (no bias) → BatchNorm → ReLU, with the mmcv key names `conv` / `bn`.

    The official heads use SyncBatchNorm; in eval it is the same affine map as BatchNorm2d and has the
    same state_dict entries, so BatchNorm2d is used (no process group needed).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.activate = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


def resize_bilinear(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize with align_corners=False, the mmseg `resize` every head here uses."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

