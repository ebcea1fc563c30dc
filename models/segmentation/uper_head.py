"""UperNet decode head (mmseg 1.x `UPerHead`): pyramid pooling on the last level + FPN fusion.

Registration order follows the official state_dict: `conv_seg`, `psp_modules`, `bottleneck`,
`lateral_convs`, `fpn_convs`, `fpn_bottleneck`. The training-only auxiliary FCN head is not built;
its `auxiliary_head.*` checkpoint keys are dropped on load.
"""

from __future__ import annotations

import torch
from torch import nn

from models.segmentation.layers import ConvModule, resize_bilinear


def adaptive_pool_matrix(out_size: int, in_size: int, like: torch.Tensor) -> torch.Tensor:
    """(out, in) averaging weights of adaptive average pooling: output cell i averages the inputs
    [⌊i·in/out⌋, ⌈(i+1)·in/out⌉), PyTorch's definition."""
    cells = torch.arange(out_size, device=like.device)
    start = (cells * in_size) // out_size
    end = ((cells + 1) * in_size + out_size - 1) // out_size
    positions = torch.arange(in_size, device=like.device)
    inside = ((positions[None] >= start[:, None]) & (positions[None] < end[:, None])).to(like.dtype)
    return inside / inside.sum(dim=1, keepdim=True)


class AdaptiveAvgPool(nn.Module):
    """`nn.AdaptiveAvgPool2d` written as two averaging matrices.

    Same result, but it stays correct in an exported graph with dynamic H/W. The dynamo ONNX export of
    `adaptive_avg_pool2d` fixes the kernel to the example input's size, so other sizes came out wrong.
    """

    def __init__(self, output_size: int) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = adaptive_pool_matrix(self.output_size, x.shape[-2], x)
        cols = adaptive_pool_matrix(self.output_size, x.shape[-1], x)
        return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


class PyramidPooling(nn.ModuleList):
    """Adaptive average pools at several scales, each followed by a 1×1 ConvModule, upsampled back."""

    def __init__(self, pool_scales: tuple[int, ...], in_channels: int, channels: int) -> None:
        super().__init__(
            [nn.Sequential(AdaptiveAvgPool(scale), ConvModule(in_channels, channels)) for scale in pool_scales]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [resize_bilinear(branch(x), x.shape[-2:]) for branch in self]


class UPerHead(nn.Module):
    """PPM on the stride-32 level, top-down FPN over all levels, fused on the stride-4 grid.

    Output: class logits at 1/4 of the input resolution, not upsampled.
    """

    def __init__(self, in_channels: tuple[int, ...], num_classes: int = 150, channels: int = 512,
                 pool_scales: tuple[int, ...] = (1, 2, 3, 6), dropout_ratio: float = 0.1) -> None:
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.dropout = nn.Dropout2d(dropout_ratio)
        self.psp_modules = PyramidPooling(pool_scales, in_channels[-1], channels)
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList([ConvModule(c, channels) for c in in_channels[:-1]])
        self.fpn_convs = nn.ModuleList([ConvModule(channels, channels, 3, padding=1) for _ in in_channels[:-1]])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3, padding=1)

    def psp_forward(self, last: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([last, *self.psp_modules(last)], dim=1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features[:-1], strict=True)]
        laterals.append(self.psp_forward(features[-1]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: add the upsampled coarser level
            laterals[i - 1] = laterals[i - 1] + resize_bilinear(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals[:-1], strict=True)]
        outs.append(laterals[-1])
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [resize_bilinear(o, size) for o in outs[1:]]
        return self.conv_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, dim=1))))
