"""The fused OpenAI Triton PaCaAttention kernel vs a float64 PyTorch reference.

On a CUDA machine the cases run on the GPU. Without CUDA the cases run under the Triton CPU
interpreter, which must be enabled before `triton` is first imported — so the main test process
re-runs this file in a subprocess with TRITON_INTERPRET=1 (the variable never leaks into other tests).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.paths import REPO_ROOT

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
ON_CUDA = torch.cuda.is_available()

if not INTERPRETED and not ON_CUDA:

    def test_kernel_cases_under_triton_interpreter():
        env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", str(Path(__file__)), "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
        assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]

else:
    from models.attention import PaCaAttentionCore
    from models.kernels.attention_triton import CONFIGS, block_d
    from models.kernels.torch_ops import TritonAttentionCore, triton_attention, use_triton_attention

    DEVICE = "cuda" if ON_CUDA else "cpu"
    pytestmark = [pytest.mark.gpu] if ON_CUDA else []

    def reference(q, k, v, num_heads, scale):
        """Float64 per-head attention written independently of the kernel and of models.attention."""
        q, k, v = q.double(), k.double(), v.double()
        b, n, c = q.shape
        d = c // num_heads
        qh, kh, vh = (t.reshape(b, -1, num_heads, d).permute(0, 2, 1, 3) for t in (q, k, v))
        weights = torch.softmax(qh @ kh.transpose(-1, -2) * scale, dim=-1)
        return (weights @ vh).permute(0, 2, 1, 3).reshape(b, n, c)

    def inputs(batch, n, m, heads, head_dim, dtype=torch.float32, seed=0):
        g = torch.Generator().manual_seed(seed)
        c = heads * head_dim
        return [torch.randn(batch, rows, c, generator=g).to(DEVICE, dtype) for rows in (n, m, m)]

    # (batch, heads, N, M, head_dim): N never a multiple of the block sizes; the real head dims 24/40/48/32.
    CASES = [(1, 2, 49, 100, 24), (2, 3, 70, 49, 40), (1, 1, 33, 7, 48), (2, 2, 40, 40, 32), (3, 1, 5, 2, 24)]

    @pytest.mark.parametrize(("batch", "heads", "n", "m", "head_dim"), CASES)
    def test_kernel_matches_float64_reference(batch, heads, n, m, head_dim):
        q, k, v = inputs(batch, n, m, heads, head_dim)
        scale = 1 / math.sqrt(head_dim)
        out = torch.full_like(q, float("nan"))  # poisoned: any element the kernel skips stays NaN
        returned = triton_attention(q, k, v, heads, scale, out=out)
        assert returned is out
        assert not torch.isnan(out).any()
        torch.testing.assert_close(out.double().cpu(), reference(q, k, v, heads, scale).cpu(), rtol=0, atol=1e-5)

    @pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"n{c.block_n}m{c.block_m}")
    def test_every_tactic_is_correct(config):
        """Each TensorRT tactic, including several key tiles (M=100 > BLOCK_M) for the online softmax."""
        q, k, v = inputs(2, n=37, m=100, heads=1, head_dim=40, seed=3)
        out = torch.full_like(q, float("nan"))
        triton_attention(q, k, v, 1, 0.2, out=out, config=config)
        torch.testing.assert_close(out.double().cpu(), reference(q, k, v, 1, 0.2).cpu(), rtol=0, atol=1e-5)

    def test_half_precision():
        q, k, v = inputs(2, n=50, m=49, heads=2, head_dim=24, dtype=torch.float16, seed=5)
        out = torch.full_like(q, float("nan"))
        triton_attention(q, k, v, 2, 1 / math.sqrt(24), out=out)
        torch.testing.assert_close(out.double().cpu(), reference(q, k, v, 2, 1 / math.sqrt(24)).cpu(),
                                   rtol=0, atol=3e-3)

    def test_non_contiguous_inputs_and_bad_shapes():
        q, k, v = inputs(2, n=20, m=9, heads=2, head_dim=16, seed=9)
        q_t = torch.cat([q, q], dim=2)[..., : q.shape[2]]  # same values, row stride 2C
        assert not q_t.is_contiguous()
        torch.testing.assert_close(triton_attention(q_t, k, v, 2, 0.25).double().cpu(),
                                   reference(q, k, v, 2, 0.25).cpu(), rtol=0, atol=1e-5)
        with pytest.raises(ValueError, match="divisible"):
            triton_attention(q, k, v, 3, 0.25)
        with pytest.raises(ValueError, match="expected q"):
            triton_attention(q, k[:, :5], v, 2, 0.25)

    def test_block_d_padding():
        assert [block_d(d) for d in (24, 32, 40, 48, 8)] == [32, 32, 64, 64, 16]

    def test_swap_into_a_model():
        from models.demo.archs import CLS_CONFIG
        from models.paca_vit import PaCaViT

        torch.manual_seed(0)
        model = PaCaViT(CLS_CONFIG).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            want = model(x)
        cores = sum(isinstance(m, PaCaAttentionCore) for m in model.modules())
        assert use_triton_attention(model) == cores > 0
        assert not any(isinstance(m, PaCaAttentionCore) for m in model.modules())
        assert sum(isinstance(m, TritonAttentionCore) for m in model.modules()) == cores
        model.to(DEVICE)
        with torch.no_grad():
            got = model(x.to(DEVICE)).cpu()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
