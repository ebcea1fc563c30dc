"""The patch-to-cluster attention core, kept as one module so export and CUDA backends can swap it.

`PaCaAttentionCore` is exactly the part that becomes the ONNX custom op `paca::PaCaAttention`
(and the TensorRT plugin / OpenAI Triton kernel): head split, scaled scores, softmax over the
keys (the M clusters, or the N patches in stages without clustering), weighted sum, head merge.
The q/k/v/proj Linears and the cluster pooling stay outside it as ordinary GEMM/LayerNorm ops.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def patch_to_cluster_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
                               scale: float | None = None) -> torch.Tensor:
    """Multi-head attention of N queries over M keys.

    q: (B, N, C), k and v: (B, M, C) → (B, N, C). Channel c belongs to head c // (C / num_heads).
    """
    batch, num_queries, channels = q.shape
    num_keys = k.shape[1]
    head_dim = channels // num_heads
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    qh = q.reshape(batch, num_queries, num_heads, head_dim).transpose(1, 2)
    kh = k.reshape(batch, num_keys, num_heads, head_dim).transpose(1, 2)
    vh = v.reshape(batch, num_keys, num_heads, head_dim).transpose(1, 2)
    scores = torch.matmul(qh * scale, kh.transpose(-2, -1))
    weights = scores.softmax(dim=-1)
    out = torch.matmul(weights, vh)
    return out.transpose(1, 2).reshape(batch, num_queries, channels)


class PaCaAttentionCore(nn.Module):
    """Stateless attention core; `num_heads` and `scale` are the custom op's attributes."""

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = 1.0 / math.sqrt(head_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return patch_to_cluster_attention(q, k, v, self.num_heads, self.scale)
