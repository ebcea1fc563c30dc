"""The export-time stand-in for `PaCaAttentionCore`: emits one `paca::PaCaAttention` node.

During `torch.onnx.export` (dynamo) the module returns a symbolic node carrying the attributes the
TensorRT plugin reads (`num_heads`, `scale`, `plugin_namespace`, `plugin_version`); in eager mode it
computes the same math as the model, so a swapped model still runs in PyTorch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from export.op_spec import OP_DOMAIN, OP_NAME, OP_VERSION, op_attributes
from models.attention import PaCaAttentionCore, patch_to_cluster_attention


class PaCaAttentionExport(nn.Module):
    """Same interface as `PaCaAttentionCore`; one custom ONNX node when exported."""

    def __init__(self, num_heads: int, scale: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = scale

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return torch.onnx.ops.symbolic(
                f"{OP_DOMAIN}::{OP_NAME}",
                (q, k, v),
                op_attributes(self.num_heads, self.scale),
                dtype=q.dtype,
                shape=q.shape,
                version=OP_VERSION,
            )
        return patch_to_cluster_attention(q, k, v, self.num_heads, self.scale)


@contextmanager
def custom_attention_cores(model: nn.Module) -> Iterator[int]:
    """Temporarily replace every `PaCaAttentionCore` in `model`; yields how many were replaced."""
    replaced: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, PaCaAttentionCore):
                replaced.append((parent, child_name, child))
                setattr(parent, child_name, PaCaAttentionExport(child.num_heads, float(child.scale)))
    try:
        yield len(replaced)
    finally:
        for parent, child_name, original in replaced:
            setattr(parent, child_name, original)
