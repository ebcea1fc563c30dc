"""`paca::PaCaAttention` as a TensorRT Quickly Deployable Plugin with an ahead-of-time Triton kernel.

Importing this module registers the plugin (needs `tensorrt` >= 10.9 and `triton`). The AOT implementation
embeds the PTX of `models.kernels.attention_triton.paca_attention_kernel` in the engine, so engines run in
plain C++ TensorRT (trtexec, Triton Inference Server) without Python or this module.

No `from __future__ import annotations` here, on purpose: TensorRT's decorators read the annotations with
`inspect.signature()` and test them with `issubclass`, so they must be real classes, not strings.
Shape/type/tactic logic lives in `plugin_logic`, the compile in `aot_kernel` (both tested without TensorRT).
"""

import tensorrt as trt
import tensorrt.plugin as trtp

from export.tensorrt import plugin_logic as logic
from export.tensorrt.aot_kernel import compile_attention, shared_bytes
from export.tensorrt.versions import require_supported

TRT_VERSION = require_supported(trt.__version__)


def target_capability() -> int:
    """Compute capability of the GPU the engine is built on (and will run on), e.g. 90."""
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
    """The network's own type (networks are strongly typed) with the tactics whose kernel fits 48 KiB of
    shared memory; before TensorRT 11.1 only TensorRT's default tactic."""
    element = logic.triton_dtype(str(q.dtype))
    channels = int(q.shape[2])
    if channels < 0:
        raise ValueError("PaCaAttention needs a static channel dimension")
    fitting = logic.fitting_tactics(shared_bytes(element, num_heads, channels, scale, target_capability()))
    io_types = ", ".join([logic.AUTOTUNE_TYPES[element]] * 4)  # q, k, v, output share one type
    return [trtp.AutoTuneCombination(io_types, "LINEAR", logic.advertised_tactics(fitting, TRT_VERSION))]


@trtp.aot_impl(logic.PLUGIN_ID)
def paca_attention_aot(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc, num_heads: int, scale: float,
                       outputs: tuple[trtp.TensorDesc], tactic: int
                       ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
    """PTX, launch geometry and the extra scalar arguments N and M (between the inputs and the output)."""
    element = logic.triton_dtype(str(q.dtype))
    channels = logic.static_channels(q.shape_expr[2])
    tactic = logic.resolve_tactic(tactic)
    kernel = compile_attention(element, num_heads, channels, scale, tactic, target_capability())
    if kernel.shared_bytes > logic.SHARED_MEMORY_LIMIT:
        raise ValueError(f"PaCaAttention tactic {tactic} needs {kernel.shared_bytes} bytes of shared memory; "
                         f"an AOT plugin launch allows {logic.SHARED_MEMORY_LIMIT}")

    batch, n, m = q.shape_expr[0], q.shape_expr[1], k.shape_expr[1]
    grid_x, grid_y = logic.launch_grid(batch, n, num_heads, tactic)
    launch = trtp.KernelLaunchParams()
    launch.grid_x = grid_x
    launch.grid_y = grid_y
    launch.block_x = kernel.block_x
    launch.shared_mem = kernel.shared_bytes
    extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(n), trtp.SymInt32(m)])
    return kernel.name.encode(), kernel.ptx.encode(), launch, extra
