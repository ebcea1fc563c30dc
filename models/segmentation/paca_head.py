"""The PaCa semantic-segmentation head of the paper: one cluster per class, patch-to-cluster attention.

Module names and registration order follow the official `PaCaSegHead` state_dict
(`paca_seghead_ade20k_*.keys.json`): `conv_seg` first (mmseg `BaseDecodeHead`), then `convs`, `q`,
`clustering`, `k`, `v`, `proj`.
"""

from __future__ import annotations

import torch
from torch import nn

from models.attention import PaCaAttentionCore
from models.segmentation.layers import BN_EPS, ConvModule, resize_bilinear


class SwapLastTwoDims(nn.Module):
    """(B, M, C) ↔ (B, C, M): lets a BatchNorm1d normalise the channels of cluster tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


def cluster_token_projection(in_channels: int, channels: int) -> nn.Sequential:
    """Linear → BN over channels (B, C, M) → ReLU; keys `.0` (Linear) and `.2` (BN) as officially."""
    return nn.Sequential(
        nn.Linear(in_channels, channels),
        SwapLastTwoDims(),
        nn.BatchNorm1d(channels, eps=BN_EPS),
        SwapLastTwoDims(),
        nn.ReLU(),
    )


class PaCaSegHead(nn.Module):
    """Decode head whose M = num_classes clusters are pooled from the fused multi-level features.

    Eval forward, as the official `decode_heads/paca_head.py`: project every level to `channels`, resize to
    the stride-4 grid, concat (X); q from X; cluster logits from X with a softmax over the N patches (z);
    cluster tokens Z = z·X; k/v = ReLU(BN(Linear(Z))); single-head attention without scaling; proj → conv_seg.
    Output: class logits at the stride-4 grid (1/4 of the input), not upsampled.
    """

    def __init__(self, in_channels: tuple[int, ...], num_classes: int = 150, channels: int = 256,
                 dropout_ratio: float = 0.1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.dropout = nn.Dropout2d(dropout_ratio)
        self.convs = nn.ModuleList([ConvModule(c, channels) for c in in_channels])
        fused = channels * len(in_channels)
        self.q = nn.Sequential(ConvModule(fused, channels))
        self.clustering = nn.Sequential(ConvModule(fused, channels), nn.Conv2d(channels, num_classes, 1))
        self.k = cluster_token_projection(fused, channels)
        self.v = cluster_token_projection(fused, channels)
        self.core = PaCaAttentionCore(num_heads=1, head_dim=channels)
        self.core.scale = 1.0  # the official head does not scale q·kᵀ
        self.proj = ConvModule(channels, channels)

    def fuse(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Project each level to `channels` and concatenate on the finest grid → (B, L·channels, H1, W1)."""
        size = features[0].shape[-2:]
        projected = [self.convs[0](features[0])]
        projected += [resize_bilinear(conv(f), size) for conv, f in zip(self.convs[1:], features[1:], strict=True)]
        return torch.cat(projected, dim=1)

    def forward_with_assignment(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, K, H1, W1), class-cluster assignment z (B, K, H1, W1), rows summing to 1 over N)."""
        fused = self.fuse(features)
        batch, _, height, width = fused.shape
        q = self.q(fused).flatten(2).transpose(1, 2)  # (B, N, channels)
        z = self.clustering(fused).flatten(2).softmax(dim=-1)  # (B, K, N), softmax over the patches
        tokens = torch.matmul(z, fused.flatten(2).transpose(1, 2))  # (B, K, L·channels)
        out = self.core(q, self.k(tokens), self.v(tokens))  # (B, N, channels)
        out = self.proj(out.transpose(1, 2).reshape(batch, -1, height, width))
        logits = self.conv_seg(self.dropout(out))
        return logits, z.reshape(batch, self.num_classes, height, width)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.forward_with_assignment(features)[0]
