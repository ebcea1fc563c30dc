"""Ahead-of-time compile of the PaCaAttention Triton kernel to the PTX a TensorRT AOT plugin embeds.

Needs only `triton` (no GPU, no TensorRT): the target compute capability is a parameter. One compile per
specialisation (element type, heads, head dim, scale, tactic, capability), cached for the process, since
TensorRT asks for the same kernel during autotuning and again for every launch-parameter query.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from export.tensorrt import plugin_logic as logic


class AotCompileError(RuntimeError):
    """The kernel cannot be launched the way a QDP AOT plugin launches kernels."""


@dataclass(frozen=True)
class AotKernel:
    """What `aot_impl` hands TensorRT for one specialisation."""

    name: str  # unique PTX entry name
    ptx: str  # entry declares exactly q, k, v, N, M, out
    num_warps: int
    shared_bytes: int  # dynamic shared memory per block
    target: int  # compute capability, e.g. 90

    @property
    def block_x(self) -> int:
        return self.num_warps * 32


@lru_cache(maxsize=256)
def compile_attention(element: str, num_heads: int, channels: int, scale: float, tactic: int,
                      capability: int) -> AotKernel:
    """Compile for `sm_<capability>`; checks what a QDP launch cannot provide (scratch memory)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from models.kernels.attention_triton import paca_attention_kernel

    tactic = logic.resolve_tactic(tactic)
    constants = logic.kernel_constexprs(num_heads, channels, scale, tactic, element)
    config = logic.config_for_tactic(tactic)
    arg_names = list(paca_attention_kernel.arg_names)
    source = ASTSource(fn=paca_attention_kernel, signature=logic.kernel_signature(element, list(constants)),
                       constexprs=constants, attrs=logic.alignment_attrs(arg_names))
    compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                              options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    metadata = compiled.metadata
    if getattr(metadata, "global_scratch_size", 0) or getattr(metadata, "profile_scratch_size", 0):
        raise AotCompileError("the PaCaAttention kernel needs Triton scratch memory, which a QDP AOT launch "
                              "cannot pass")
    ptx = logic.strip_unused_params(compiled.asm["ptx"], metadata.name, logic.KERNEL_PARAMS)
    name = logic.entry_name(element, num_heads, channels // num_heads, tactic, ptx)
    return AotKernel(name=name, ptx=logic.rename_entry(ptx, metadata.name, name), num_warps=metadata.num_warps,
                     shared_bytes=int(metadata.shared), target=capability)


def shared_bytes(element: str, num_heads: int, channels: int, scale: float, capability: int):
    """tactic → dynamic shared memory of its kernel (compiles each tactic once)."""
    return lambda tactic: compile_attention(element, num_heads, channels, scale, tactic, capability).shared_bytes
