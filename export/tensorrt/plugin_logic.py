"""Plain-Python halves of the `paca::PaCaAttention` QDP plugin: shapes, types, tactics, launch geometry.

`export.tensorrt.plugin` (which needs TensorRT) only forwards to these, so they are unit-tested here
without TensorRT. Shape arguments may be ints or TensorRT symbolic expressions: only +, //, * are used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from models.kernels.attention_triton import CONFIGS, KernelConfig, block_d, constexprs

PLUGIN_ID = "paca::PaCaAttention"
KERNEL_PARAMS = 6  # q, k, v, N, M, out — what a QDP AOT launch passes
# TensorRT DataType names → Triton pointer element types (the plugin supports these).
TRT_TO_TRITON_DTYPE = {"FLOAT": "fp32", "HALF": "fp16", "BF16": "bf16"}
TRITON_TO_TORCH_NAME = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
DEFAULT_TACTIC = 2  # CONFIGS[1]
# q, k, v and the output share one type; "|" lists are matched index-wise by TensorRT.
TYPE_COMBINATION = "FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16"


def tactic_ids() -> list[int]:
    """TensorRT tactic ids (> 0), one per kernel config."""
    return list(range(1, len(CONFIGS) + 1))


def config_for_tactic(tactic: int) -> KernelConfig:
    """Tactic 0 (TensorRT's "no tactic chosen") uses the default config."""
    if tactic == 0:
        tactic = DEFAULT_TACTIC
    if not 1 <= tactic <= len(CONFIGS):
        raise ValueError(f"unknown PaCaAttention tactic {tactic}; valid: {tactic_ids()}")
    return CONFIGS[tactic - 1]


def triton_dtype(trt_dtype_name: str) -> str:
    name = trt_dtype_name.rsplit(".", 1)[-1]
    if name not in TRT_TO_TRITON_DTYPE:
        raise ValueError(f"PaCaAttention supports {sorted(TRT_TO_TRITON_DTYPE)}, got {name}")
    return TRT_TO_TRITON_DTYPE[name]


def kernel_signature(element: str, constexpr_names: Sequence[str]) -> dict[str, str]:
    """`triton.compiler.ASTSource` signature of `paca_attention_kernel` for one element type."""
    pointer = f"*{element}"
    return {"q_ptr": pointer, "k_ptr": pointer, "v_ptr": pointer, "N": "i32", "M": "i32", "out_ptr": pointer,
            **dict.fromkeys(constexpr_names, "constexpr")}


def strip_unused_params(ptx: str, kernel_name: str, keep: int) -> str:
    """Drop the entry parameters after the first `keep` when the body never reads them.

    Triton ≥ 3.3 appends global/profile scratch pointers to every kernel; a QDP AOT launch passes only
    inputs, extra scalars and outputs, so the PTX entry must declare exactly those.
    """
    entry = re.search(rf"\.entry {re.escape(kernel_name)}\(([^)]*)\)", ptx)
    if entry is None:
        raise ValueError(f"no .entry {kernel_name} in the PTX")
    params = [p.strip() for p in entry.group(1).split(",") if p.strip()]
    if len(params) < keep:
        raise ValueError(f"{kernel_name} declares {len(params)} parameters, expected at least {keep}")
    body = ptx[entry.end():]
    for param in params[keep:]:
        name = param.split()[-1]
        if re.search(rf"\b{re.escape(name)}\b", body):
            raise ValueError(f"{kernel_name} uses its parameter {name}; it cannot be dropped")
    kept = ",\n\t".join(params[:keep])
    return ptx[:entry.start()] + f".entry {kernel_name}(\n\t{kept}\n)" + body


def kernel_constexprs(num_heads: int, channels: int, scale: float, tactic: int, element: str) -> dict[str, Any]:
    if channels % num_heads:
        raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
    return constexprs(num_heads, channels // num_heads, scale, config_for_tactic(tactic), TRITON_TO_TORCH_NAME[element])


def launch_grid(batch: Any, n: Any, num_heads: int, tactic: int) -> tuple[Any, Any]:
    """(grid_x, grid_y): ⌈N / BLOCK_N⌉ programs per (batch, head); works on ints and symbolic dims."""
    config = config_for_tactic(tactic)
    return (n + (config.block_n - 1)) // config.block_n, batch * num_heads


def static_channels(channels: Any) -> int:
    """C must be known at build time (it selects HEAD_DIM); PaCa's C is a per-stage constant."""
    value = getattr(channels, "constant_value", channels)
    if getattr(channels, "is_constant", True) is False or not isinstance(value, int):
        raise ValueError("PaCaAttention needs a static channel dimension")
    return value


def shared_memory_ok(head_dim: int, tactic: int, element_bytes: int = 4, limit: int = 227 * 1024) -> bool:
    """Rough upper bound of the tiles in shared memory (q, k, v tiles) against the sm_90 limit."""
    config = config_for_tactic(tactic)
    tiles = (config.block_n + 2 * config.block_m) * block_d(head_dim) * element_bytes * config.num_stages
    return tiles <= limit
