"""`paca::PaCaAttention` as a TensorRT Quickly Deployable Plugin with an ahead-of-time Triton kernel.

Importing this module registers the plugin (needs `tensorrt` ≥ 10.6 and `triton` with a CUDA target).
The AOT implementation embeds the PTX of `models.kernels.attention_triton.paca_attention_kernel` in the
engine, so engines run in plain C++ TensorRT (trtexec, Triton Inference Server) without Python.
All shape/type/tactic logic lives in `plugin_logic` (tested without TensorRT).
"""

from __future__ import annotations

import tensorrt.plugin as trtp
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from export.tensorrt import plugin_logic as logic
from models.kernels.attention_triton import paca_attention_kernel

_COMPILED: dict[tuple, object] = {}


def _compile(element: str, constants: dict, num_warps: int, num_stages: int, capability: int):
    key = (element, tuple(sorted(constants.items())), num_warps, num_stages, capability)
    if key not in _COMPILED:
        source = ASTSource(fn=paca_attention_kernel, signature=logic.kernel_signature(element, list(constants)),
                           constexprs=constants)
        _COMPILED[key] = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                                        options={"num_warps": num_warps, "num_stages": num_stages})
    return _COMPILED[key]


def _capability() -> int:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return major * 10 + minor


@trtp.register(logic.PLUGIN_ID)
def paca_attention_desc(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc, num_heads: int,
                        scale: float) -> trtp.TensorDesc:
    return q.like()


@trtp.autotune(logic.PLUGIN_ID)
def paca_attention_autotune(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc, num_heads: int,
                            scale: float, outputs: tuple[trtp.TensorDesc]) -> list[trtp.AutoTuneCombination]:
    combination = trtp.AutoTuneCombination(logic.TYPE_COMBINATION, "LINEAR")
    combination.tactics(logic.tactic_ids())
    return [combination]


@trtp.aot_impl(logic.PLUGIN_ID)
def paca_attention_aot(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc, num_heads: int, scale: float,
                       outputs: tuple[trtp.TensorDesc], tactic: int):
    element = logic.triton_dtype(str(q.dtype))
    channels = logic.static_channels(q.shape_expr[2])
    constants = logic.kernel_constexprs(num_heads, channels, scale, tactic, element)
    config = logic.config_for_tactic(tactic)
    compiled = _compile(element, constants, config.num_warps, config.num_stages, _capability())
    if getattr(compiled.metadata, "global_scratch_size", 0) or getattr(compiled.metadata, "profile_scratch_size", 0):
        raise RuntimeError("PaCaAttention kernel needs Triton scratch memory, which the QDP launch cannot pass")
    ptx = logic.strip_unused_params(compiled.asm["ptx"], compiled.metadata.name, logic.KERNEL_PARAMS)

    batch, n, m = q.shape_expr[0], q.shape_expr[1], k.shape_expr[1]
    grid_x, grid_y = logic.launch_grid(batch, n, num_heads, tactic)
    launch = trtp.KernelLaunchParams()
    launch.grid_x, launch.grid_y = grid_x, grid_y
    launch.block_x = compiled.metadata.num_warps * 32
    launch.shared_mem = compiled.metadata.shared

    extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(n), trtp.SymInt32(m)])  # between inputs and outputs
    return compiled.metadata.name.encode(), ptx.encode(), launch, extra
