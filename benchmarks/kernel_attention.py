"""Fused OpenAI Triton PaCaAttention kernel vs the unfused PyTorch graph (and PyTorch SDPA), on CUDA.

Shapes are the attention cores of real PaCa-ViT variants (every stage: N patches × M clusters, or N × N
in stages without clusters) at the given image sizes. Prints one table with times and ratios, and the
max abs difference of each implementation vs float64. Run: python benchmarks/kernel_attention.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.attention import patch_to_cluster_attention
from models.kernels.torch_ops import triton_attention
from models.variants import CLASSIFICATION_VARIANTS


def stage_shapes(variant: str, image: int, batch: int) -> list[dict]:
    config = CLASSIFICATION_VARIANTS[variant]
    shapes = []
    for i in range(4):
        side = math.ceil(image / 4 / 2**i)
        n = side * side
        m = config.clusters[i] or n
        shapes.append({"variant": variant, "image": image, "stage": i + 1, "B": batch, "N": n, "M": m,
                       "heads": config.num_heads[i], "C": config.embed_dims[i]})
    return shapes


def sdpa(q, k, v, num_heads, scale):
    b, n, c = q.shape
    d = c // num_heads
    qh, kh, vh = (t.reshape(b, -1, num_heads, d).transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(qh, kh, vh, scale=scale).transpose(1, 2).reshape(b, n, c)


def bench(fn, warmup: int = 10, rep: int = 50) -> float:
    """Median milliseconds per call, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rep):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants", nargs="+", default=["pacavit_tiny_p2cconv_100_0", "pacavit_base_p2cconv_100_0"])
    parser.add_argument("--images", nargs="+", type=int, default=[224, 512])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16"])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    header = f"{'variant':28} {'img':>4} {'st':>2} {'dtype':7} {'N':>6} {'M':>5} {'h':>2} " \
             f"{'unfused ms':>10} {'sdpa ms':>8} {'triton ms':>9} {'unfused/triton':>14} {'sdpa/triton':>11} " \
             f"{'err triton':>10} {'err unfused':>11}"
    print(header)
    rows = []
    for variant in args.variants:
        for image in args.images:
            for shape in stage_shapes(variant, image, args.batch):
                for dtype_name in args.dtypes:
                    dtype = getattr(torch, dtype_name)
                    g = torch.Generator(device="cuda").manual_seed(0)
                    q = torch.randn(shape["B"], shape["N"], shape["C"], device="cuda", generator=g).to(dtype)
                    k = torch.randn(shape["B"], shape["M"], shape["C"], device="cuda", generator=g).to(dtype)
                    v = torch.randn_like(k)
                    heads = shape["heads"]
                    scale = (shape["C"] // heads) ** -0.5
                    ref = patch_to_cluster_attention(q.double(), k.double(), v.double(), heads, scale)
                    err_triton = (triton_attention(q, k, v, heads, scale).double() - ref).abs().max().item()
                    err_unfused = (patch_to_cluster_attention(q, k, v, heads, scale).double() - ref).abs().max().item()
                    t_unfused = bench(lambda q=q, k=k, v=v, h=heads, s=scale: patch_to_cluster_attention(q, k, v, h, s))
                    t_sdpa = bench(lambda q=q, k=k, v=v, h=heads, s=scale: sdpa(q, k, v, h, s))
                    t_triton = bench(lambda q=q, k=k, v=v, h=heads, s=scale: triton_attention(q, k, v, h, s))
                    row = {**shape, "dtype": dtype_name, "unfused_ms": t_unfused, "sdpa_ms": t_sdpa,
                           "triton_ms": t_triton, "err_triton": err_triton, "err_unfused": err_unfused}
                    rows.append(row)
                    print(f"{variant:28} {image:>4} {shape['stage']:>2} {dtype_name:7} {shape['N']:>6} {shape['M']:>5} "
                          f"{heads:>2} {t_unfused:>10.3f} {t_sdpa:>8.3f} {t_triton:>9.3f} "
                          f"{t_unfused / t_triton:>14.2f} {t_sdpa / t_triton:>11.2f} {err_triton:>10.2e} "
                          f"{err_unfused:>11.2e}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
