"""PaCa-ViT body + FPN with torchvision's `BackboneWithFPN` attribute layout (`body`, `fpn`, `out_channels`)."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from models.config import PaCaConfig
from models.paca_vit import PaCaViT


class PaCaFPNBackbone(nn.Module):
    """Stage-norm outputs at strides 4/8/16/32 → FPN P2..P5 (+ P6 = every second pixel of P5).

    The FPN is mmdet's (1×1 laterals, nearest top-down, 3×3 outputs, max-pool k1 s2 for P6), which
    torchvision's `FeaturePyramidNetwork` + `LastLevelMaxPool` compute identically. Keys: `body.*` are
    the official backbone keys, `fpn.*` torchvision's.
    """

    def __init__(self, config: PaCaConfig, out_channels: int = 256) -> None:
        super().__init__()
        self.body = PaCaViT(dataclasses.replace(config, num_classes=0))
        self.fpn = FeaturePyramidNetwork(list(config.embed_dims), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.config = self.body.config  # read by export (which stages have cluster maps)

    def _pyramid(self, features: list[torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self._pyramid(self.body.forward_features(x))

    def forward_with_clusters(
        self, x: torch.Tensor
    ) -> tuple[OrderedDict[str, torch.Tensor], list[torch.Tensor | None]]:
        """FPN levels plus the body's per-stage cluster assignments (B, M_i, H_i, W_i) or None."""
        features, assignments = self.body.forward_with_clusters(x)
        return self._pyramid(features), assignments
