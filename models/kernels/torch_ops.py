"""Torch entry points of the Triton kernel: a function and a drop-in `PaCaAttentionCore` replacement.

The service's torch backend on CUDA calls `use_triton_attention(model)`; the tests run the same
function on CPU tensors under TRITON_INTERPRET=1.
"""

from __future__ import annotations

import torch
from torch import nn

from models.attention import PaCaAttentionCore, patch_to_cluster_attention
from models.kernels.attention_triton import CONFIGS, KernelConfig, constexprs, grid, paca_attention_kernel

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def choose_config(n: int, m: int) -> KernelConfig:
    """Small token counts favour small tiles (more programs), large ones the bigger tiles."""
    if n <= 64:
        return CONFIGS[0]
    return CONFIGS[1] if m <= 32 else CONFIGS[2]


def triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float,
                     out: torch.Tensor | None = None, config: KernelConfig | None = None) -> torch.Tensor:
    """softmax(q·scale kᵀ) v per head; q (B,N,C), k/v (B,M,C) → (B,N,C). Writes into `out` if given."""
    if q.dim() != 3 or k.shape != v.shape or k.dim() != 3 or k.shape[0] != q.shape[0] or k.shape[2] != q.shape[2]:
        raise ValueError(f"expected q (B,N,C), k/v (B,M,C); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.dtype not in SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"unsupported dtypes {q.dtype}/{k.dtype}/{v.dtype}")
    batch, n, channels = q.shape
    m = k.shape[1]
    if channels % num_heads:
        raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if out is None:
        out = torch.empty_like(q)
    elif out.shape != q.shape or out.dtype != q.dtype or not out.is_contiguous():
        raise ValueError("out must be a contiguous tensor like q")
    config = config or choose_config(n, m)
    dtype_name = str(q.dtype).removeprefix("torch.")
    paca_attention_kernel[grid(n, batch, num_heads, config)](
        q, k, v, n, m, out, **constexprs(num_heads, channels // num_heads, scale, config, dtype_name),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out


class TritonAttentionCore(nn.Module):
    """Drop-in for `PaCaAttentionCore`: the fused kernel on CUDA, the reference math elsewhere."""

    def __init__(self, num_heads: int, scale: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = scale

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if q.is_cuda:
            return triton_attention(q, k, v, self.num_heads, self.scale)
        return patch_to_cluster_attention(q, k, v, self.num_heads, self.scale)


def use_triton_attention(model: nn.Module) -> int:
    """Replace every `PaCaAttentionCore` of `model` in place; returns how many were replaced."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PaCaAttentionCore):
                setattr(parent, name, TritonAttentionCore(child.num_heads, float(child.scale)))
                count += 1
    return count
