"""Plain-Python halves of the `paca::PaCaAttention` QDP plugin: shapes, types, tactics, launch geometry, PTX.

`export.tensorrt.plugin` (which needs TensorRT) only forwards to these, so they are unit-tested without
TensorRT. Shape arguments may be ints or `tensorrt.plugin` symbolic expressions: only +, //, * are used.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from export.tensorrt.versions import Version, supports_multi_tactic_aot
from models.kernels.attention_triton import CONFIGS, KernelConfig, constexprs

PLUGIN_ID = "paca::PaCaAttention"
KERNEL_NAME = "paca_attention_kernel"
KERNEL_PARAMS = 6  # q, k, v, N, M, out — what a QDP AOT launch passes
# TensorRT DataType names → Triton pointer element types (the plugin supports these).
TRT_TO_TRITON_DTYPE = {"FLOAT": "fp32", "HALF": "fp16"}
TRITON_TO_TORCH_NAME = {"fp32": "float32", "fp16": "float16"}
AUTOTUNE_TYPES = {"fp32": "FP32", "fp16": "FP16"}  # AutoTuneCombination spelling
DEFAULT_TACTIC = 2  # CONFIGS[1]
# A QDP AOT launch gives TensorRT no way to raise a kernel's dynamic shared-memory limit past the default
# 48 KiB (cuFuncSetAttribute), so only tactics whose kernel fits are advertised.
SHARED_MEMORY_LIMIT = 48 * 1024
# TensorRT's plugin I/O buffers are device allocations (engine I/O must be 256-byte aligned): the kernel
# may assume 16-byte aligned base pointers, which lets Triton vectorise the loads and stores.
ALIGNED_ARGS = ("q_ptr", "k_ptr", "v_ptr", "out_ptr")
ALIGNMENT = 16


def tactic_ids() -> list[int]:
    """TensorRT custom tactic ids (> 0), one per kernel config."""
    return list(range(1, len(CONFIGS) + 1))


def resolve_tactic(tactic: int) -> int:
    """Tactic 0 (TensorRT's default tactic, used when no custom tactic is advertised) is DEFAULT_TACTIC."""
    if tactic == 0:
        tactic = DEFAULT_TACTIC
    if not 1 <= tactic <= len(CONFIGS):
        raise ValueError(f"unknown PaCaAttention tactic {tactic}; valid: {tactic_ids()}")
    return tactic


def config_for_tactic(tactic: int) -> KernelConfig:
    return CONFIGS[resolve_tactic(tactic) - 1]


def advertised_tactics(fitting: Sequence[int], version: Version) -> list[int] | None:
    """Custom tactics to advertise for one type combination: every fitting one on TensorRT >= 11.1,
    none (TensorRT's default tactic 0 → DEFAULT_TACTIC) before, where multi-tactic AOT is undocumented."""
    if not fitting:
        raise ValueError(f"no PaCaAttention tactic fits {SHARED_MEMORY_LIMIT // 1024} KiB of shared memory")
    if supports_multi_tactic_aot(version):
        return list(fitting)
    if DEFAULT_TACTIC not in fitting:
        raise ValueError(f"the default PaCaAttention tactic {DEFAULT_TACTIC} needs more than "
                         f"{SHARED_MEMORY_LIMIT // 1024} KiB of shared memory here; TensorRT < 11.1 cannot pick "
                         "another")
    return None


def triton_dtype(trt_dtype_name: str) -> str:
    """'DataType.HALF' (str of a trt.DataType) → 'fp16'."""
    name = trt_dtype_name.rsplit(".", 1)[-1]
    if name not in TRT_TO_TRITON_DTYPE:
        raise ValueError(f"PaCaAttention supports {sorted(TRT_TO_TRITON_DTYPE)}, got {name}")
    return TRT_TO_TRITON_DTYPE[name]


def kernel_signature(element: str, constexpr_names: Sequence[str]) -> dict[str, str]:
    """`triton.compiler.ASTSource` signature of `paca_attention_kernel` for one element type."""
    pointer = f"*{element}"
    return {"q_ptr": pointer, "k_ptr": pointer, "v_ptr": pointer, "N": "i32", "M": "i32", "out_ptr": pointer,
            **dict.fromkeys(constexpr_names, "constexpr")}


def alignment_attrs(arg_names: Sequence[str]) -> dict[tuple[int], list[list[Any]]]:
    """`ASTSource(attrs=...)`: 16-byte divisibility of the I/O pointers (what Triton's JIT infers at a launch)."""
    return {(arg_names.index(name),): [["tt.divisibility", ALIGNMENT]] for name in ALIGNED_ARGS}


def _entry(ptx: str, kernel_name: str) -> re.Match[str]:
    entry = re.search(rf"\.entry {re.escape(kernel_name)}\(([^)]*)\)", ptx)
    if entry is None:
        raise ValueError(f"no .entry {kernel_name} in the PTX")
    return entry


def entry_params(ptx: str, kernel_name: str) -> list[str]:
    return [p.strip() for p in _entry(ptx, kernel_name).group(1).split(",") if p.strip()]


def strip_unused_params(ptx: str, kernel_name: str, keep: int) -> str:
    """Drop the entry parameters after the first `keep` when the body never reads them.

    Triton ≥ 3.3 appends global/profile scratch pointers to every kernel; a QDP AOT launch passes only
    inputs, extra scalars and outputs, so the PTX entry must declare exactly those.
    """
    entry = _entry(ptx, kernel_name)
    params = entry_params(ptx, kernel_name)
    if len(params) < keep:
        raise ValueError(f"{kernel_name} declares {len(params)} parameters, expected at least {keep}")
    body = ptx[entry.end():]
    for param in params[keep:]:
        name = param.split()[-1]
        if re.search(rf"\b{re.escape(name)}\b", body):
            raise ValueError(f"{kernel_name} uses its parameter {name}; it cannot be dropped")
    kept = ",\n\t".join(params[:keep])
    return ptx[:entry.start()] + f".entry {kernel_name}(\n\t{kept}\n)" + body


def entry_name(element: str, num_heads: int, head_dim: int, tactic: int, ptx: str) -> str:
    """A PTX entry name unique to one specialisation: TensorRT keeps every plugin layer's kernel in one
    engine, so two specialisations (stage, heads, head dim, tactic, dtype — and scale, via the PTX hash)
    must never share a name."""
    digest = hashlib.sha256(ptx.encode()).hexdigest()[:12]
    return f"paca_attn_{element}_h{num_heads}_d{head_dim}_t{tactic}_{digest}"


def rename_entry(ptx: str, old: str, new: str) -> str:
    """Rename the kernel (its .entry and its `<name>_param_<i>` parameters) in the PTX text."""
    _entry(ptx, old)
    if re.search(rf"\b{re.escape(new)}\b", ptx):
        raise ValueError(f"the PTX already mentions {new}")
    return re.sub(rf"\b{re.escape(old)}(?=\(|_param_\d|\b)", new, ptx)


def kernel_constexprs(num_heads: int, channels: int, scale: float, tactic: int, element: str) -> dict[str, Any]:
    if channels % num_heads:
        raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
    return constexprs(num_heads, channels // num_heads, scale, config_for_tactic(tactic), TRITON_TO_TORCH_NAME[element])


def launch_grid(batch: Any, n: Any, num_heads: int, tactic: int) -> tuple[Any, Any]:
    """(grid_x, grid_y): ⌈N / BLOCK_N⌉ programs per (batch, head); works on ints and symbolic dims."""
    config = config_for_tactic(tactic)
    return (n + (config.block_n - 1)) // config.block_n, batch * num_heads


def static_channels(channels: Any) -> int:
    """C must be known at build time (it selects HEAD_DIM); PaCa's C is a per-stage constant.

    `channels` is an int, or a `tensorrt.plugin.ShapeExpr`: there `is_fake` (a shape-less context) must be
    checked first, `is_constant` is a property and `constant_value()` a method.
    """
    if isinstance(channels, int):
        return channels
    if getattr(channels, "is_fake", False):
        raise ValueError("PaCaAttention needs a static channel dimension (got a fake shape expression)")
    if not channels.is_constant:
        raise ValueError("PaCaAttention needs a static channel dimension")
    return int(channels.constant_value())


def fitting_tactics(shared_bytes: Callable[[int], int]) -> list[int]:
    """Tactics whose kernel needs at most SHARED_MEMORY_LIMIT bytes (`shared_bytes(tactic)` compiles it)."""
    return [t for t in tactic_ids() if shared_bytes(t) <= SHARED_MEMORY_LIMIT]
