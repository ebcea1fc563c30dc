"""Encoder–decoder segmentor: PaCa-ViT downstream backbone + decode head (mmseg `EncoderDecoder` layout).

The submodules are named `backbone` and `decode_head`, so official mmseg checkpoint keys
(`backbone.*`, `decode_head.*`) load without renaming.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from models.config import PaCaConfig
from models.paca_vit import PaCaViT
from models.segmentation.paca_head import PaCaSegHead
from models.segmentation.uper_head import UPerHead

HeadName = Literal["paca", "upernet"]
DEFAULT_CHANNELS: dict[str, int] = {"paca": 256, "upernet": 512}


class Segmentor(nn.Module):
    """forward(pixel_values (B,3,H,W)) → class logits (B, K, ⌈H/4⌉, ⌈W/4⌉) — 1/4 resolution, not upsampled."""

    def __init__(self, backbone: PaCaViT, decode_head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone.forward_features(pixel_values))

    def forward_with_clusters(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """(logits, per-stage backbone assignments (B, M_i, H_i, W_i) or None where M_i = 0)."""
        features, assignments = self.backbone.forward_with_clusters(pixel_values)
        return self.decode_head(features), assignments

    def forward_with_head_clusters(
        self, pixel_values: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor | None], torch.Tensor | None]:
        """As `forward_with_clusters`, plus the PaCa head's class-cluster assignment (B, K, H1, W1).

        The third item is None for heads without clusters (UperNet).
        """
        features, assignments = self.backbone.forward_with_clusters(pixel_values)
        if isinstance(self.decode_head, PaCaSegHead):
            logits, head_z = self.decode_head.forward_with_assignment(features)
            return logits, assignments, head_z
        return self.decode_head(features), assignments, None


def build_segmentor(backbone: PaCaConfig, head: HeadName, num_classes: int = 150,
                    channels: int | None = None) -> Segmentor:
    """Build a randomly initialised segmentor in eval mode.

    `backbone` is used as given except that its classifier is dropped (num_classes=0); the ADE20k
    archs pass a config whose cluster counts already carry the 200-cluster downstream override
    (`models.variants.downstream_clusters`).
    """
    if head not in DEFAULT_CHANNELS:
        raise ValueError(f"unknown segmentation head {head!r}; expected 'paca' or 'upernet'")
    backbone_config = dataclasses.replace(backbone, num_classes=0)
    width = channels if channels is not None else DEFAULT_CHANNELS[head]
    if head == "paca":
        decode_head: nn.Module = PaCaSegHead(backbone_config.embed_dims, num_classes, width)
    else:
        decode_head = UPerHead(backbone_config.embed_dims, num_classes, width)
    return Segmentor(PaCaViT(backbone_config), decode_head).eval()
