"""Name, domain and attributes of the `paca::PaCaAttention` custom op, shared by every backend.

Pure Python (no torch, no onnx, no tensorrt) so the TensorRT plugin, the ONNX graph surgery and the
tests all agree on one definition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

OP_DOMAIN = "paca"
OP_NAME = "PaCaAttention"
OP_VERSION = 1
PLUGIN_NAMESPACE = "paca"
PLUGIN_VERSION = "1"


@dataclass(frozen=True)
class AttentionAttributes:
    """The op's semantic attributes, validated."""

    num_heads: int
    scale: float

    def __post_init__(self) -> None:
        if self.num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {self.num_heads}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"scale must be a positive finite float, got {self.scale}")


def op_attributes(num_heads: int, scale: float) -> dict[str, int | float | str]:
    """Attributes written on each node: the math (num_heads, scale) plus the TensorRT plugin lookup key."""
    AttentionAttributes(int(num_heads), float(scale))
    return {
        "num_heads": int(num_heads),
        "scale": float(scale),
        "plugin_namespace": PLUGIN_NAMESPACE,
        "plugin_version": PLUGIN_VERSION,
    }


def parse_attributes(fields: Mapping[str, object]) -> AttentionAttributes:
    """Attributes from a node / plugin field collection (ints may arrive as int32 arrays of length 1)."""
    missing = {"num_heads", "scale"} - set(fields)
    if missing:
        raise ValueError(f"PaCaAttention is missing attribute(s): {', '.join(sorted(missing))}")
    return AttentionAttributes(int(_scalar(fields["num_heads"])), float(_scalar(fields["scale"])))


def _scalar(value: object) -> object:
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, Sequence) or hasattr(value, "__len__"):
        items = list(value)  # type: ignore[arg-type]
        if len(items) != 1:
            raise ValueError(f"expected a scalar attribute, got {len(items)} values")
        return items[0]
    return value


def output_shape(q_shape: Sequence[object], k_shape: Sequence[object], v_shape: Sequence[object],
                 num_heads: int) -> tuple[object, ...]:
    """Output shape (= q's) after checking q (B,N,C), k and v (B,M,C) agree; dims may be symbolic."""
    if len(q_shape) != 3 or len(k_shape) != 3 or len(v_shape) != 3:
        raise ValueError("PaCaAttention expects rank-3 q, k, v (B, N, C) / (B, M, C)")
    if tuple(k_shape) != tuple(v_shape) and all(isinstance(d, int) for d in (*k_shape, *v_shape)):
        raise ValueError(f"k {tuple(k_shape)} and v {tuple(v_shape)} must have the same shape")
    channels = q_shape[2]
    if isinstance(channels, int) and channels % num_heads:
        raise ValueError(f"channels {channels} are not divisible by num_heads {num_heads}")
    if isinstance(channels, int) and isinstance(k_shape[2], int) and k_shape[2] != channels:
        raise ValueError(f"q has {channels} channels but k has {k_shape[2]}")
    return tuple(q_shape)
