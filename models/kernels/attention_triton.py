"""The fused patch-to-cluster attention kernel in OpenAI Triton.

One program computes BLOCK_N query rows of one (batch, head): scaled scores against the keys in
BLOCK_M tiles with an online softmax (so any M works, also the M = N patch attention of stages
without clusters), the weighted sum of v, and writes its slice of the merged-head output.
q, k, v, out are contiguous (B, N|M, C) with C = NUM_HEADS · HEAD_DIM — exactly the TensorRT plugin's
I/O layout. The runtime arguments are ordered like a QDP AOT launch (inputs, extra scalars N and M,
outputs), so the same source compiles to the PTX the TensorRT plugin embeds; NUM_HEADS, HEAD_DIM and
SCALE are compile-time.
"""

from __future__ import annotations

from dataclasses import dataclass

import triton
import triton.language as tl


@dataclass(frozen=True)
class KernelConfig:
    """A launch configuration (a TensorRT tactic / an autotune candidate)."""

    block_n: int
    block_m: int
    num_warps: int
    num_stages: int = 2


# Candidates benchmarked by the TensorRT autotuner (tactic i+1 ↔ CONFIGS[i]) and by the torch launcher.
CONFIGS: tuple[KernelConfig, ...] = (
    KernelConfig(32, 32, 2),
    KernelConfig(64, 32, 4),
    KernelConfig(64, 64, 4),
    KernelConfig(128, 64, 8),
)


def block_d(head_dim: int) -> int:
    """Head dim padded to a power of two ≥ 16 (tl.dot's minimum); the padding is masked."""
    return max(16, triton.next_power_of_2(head_dim))


def grid(n: int, batch: int, num_heads: int, config: KernelConfig) -> tuple[int, int, int]:
    return (triton.cdiv(n, config.block_n), batch * num_heads, 1)


@triton.jit
def paca_attention_kernel(
    q_ptr, k_ptr, v_ptr, N, M, out_ptr,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, SCALE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    batch = pid_bh // NUM_HEADS
    head = pid_bh % NUM_HEADS
    channels: tl.constexpr = NUM_HEADS * HEAD_DIM

    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < N
    dim_ok = dims < HEAD_DIM
    head_cols = head * HEAD_DIM + dims

    q_base = q_ptr + batch.to(tl.int64) * N * channels
    q = tl.load(q_base + rows[:, None] * channels + head_cols[None, :],
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
    q = (q.to(tl.float32) * SCALE).to(q.dtype)

    kv_offset = batch.to(tl.int64) * M * channels
    running_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    running_sum = tl.zeros((BLOCK_N,), tl.float32)
    acc = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    for start in range(0, M, BLOCK_M):
        keys = start + tl.arange(0, BLOCK_M)
        key_ok = keys < M
        kv_mask = key_ok[:, None] & dim_ok[None, :]
        kv_index = keys[:, None] * channels + head_cols[None, :]
        k = tl.load(k_ptr + kv_offset + kv_index, mask=kv_mask, other=0.0)
        scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        scores = tl.where(key_ok[None, :], scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, axis=1))
        weights = tl.exp(scores - new_max[:, None])
        correction = tl.exp(running_max - new_max)
        running_sum = running_sum * correction + tl.sum(weights, axis=1)
        v = tl.load(v_ptr + kv_offset + kv_index, mask=kv_mask, other=0.0)
        acc = acc * correction[:, None] + tl.dot(weights.to(v.dtype), v, input_precision=DOT_PRECISION)
        running_max = new_max
    acc = acc / running_sum[:, None]

    out_base = out_ptr + batch.to(tl.int64) * N * channels
    tl.store(out_base + rows[:, None] * channels + head_cols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & dim_ok[None, :])


def dot_precision(dtype_name: str) -> str:
    """fp32 inputs use exact IEEE products (parity with the fp32 graph); fp16/bf16 use the tensor cores."""
    return "ieee" if dtype_name == "float32" else "tf32"


def constexprs(num_heads: int, head_dim: int, scale: float, config: KernelConfig, dtype_name: str) -> dict:
    """Compile-time arguments of one specialisation (shared by the torch launcher and the TensorRT AOT path)."""
    return {
        "NUM_HEADS": num_heads, "HEAD_DIM": head_dim, "SCALE": float(scale),
        "BLOCK_N": config.block_n, "BLOCK_M": config.block_m, "BLOCK_D": block_d(head_dim),
        "DOT_PRECISION": dot_precision(dtype_name),
    }
