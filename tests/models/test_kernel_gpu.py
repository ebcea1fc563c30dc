"""On a CUDA GPU: the service's torch path with the fused Triton kernel vs ONNX Runtime (CPU) on the same model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_triton_kernel_model_on_gpu_matches_onnxruntime(tmp_path_factory, batch):
    import onnxruntime as ort

    from export.onnx_export import export_onnx
    from models.kernels.torch_ops import use_triton_attention
    from models.registry import get_arch

    torch.manual_seed(0)
    model = get_arch("demo_digits_seg").factory().eval()
    path = export_onnx("demo_digits_seg", tmp_path_factory.mktemp("gpu") / "seg.onnx", model=model)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert use_triton_attention(model) > 0
    model.cuda()
    pixels = torch.randn(batch, 3, 96, 128, generator=torch.Generator().manual_seed(batch))
    want = sess.run(["seg_logits"], {"pixel_values": pixels.numpy()})[0]
    with torch.no_grad():
        got = model(pixels.cuda()).cpu().numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
