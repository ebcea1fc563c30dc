"""Real TensorRT (needs `tensorrt` >= 10.9 and CUDA): build an engine with the AOT PaCaAttention plugin,
check the plugin layer is in it, and compare its outputs with ONNX Runtime. Skips without TensorRT/CUDA.

fp32 engines are built with TF32 off, so they are held to the fp32 graph's 1e-4 (like the ONNX export and
the CUDA kernel); fp16 engines (strongly typed fp16 graph, softmax/norms fp32) to 5e-2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def run_engine(engine, pixels: np.ndarray) -> dict[str, np.ndarray]:
    context = engine.create_execution_context()
    context.set_input_shape("pixel_values", pixels.shape)
    tensors = {"pixel_values": torch.from_numpy(pixels).cuda()}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if name != "pixel_values":
            tensors[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
        context.set_tensor_address(name, tensors[name].data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return {name: t.cpu().numpy() for name, t in tensors.items() if name != "pixel_values"}


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("fp16", 5e-2)])
def test_engine_with_plugin_matches_onnxruntime(tmp_path, precision, atol):
    pytest.importorskip("tensorrt")
    import onnxruntime as ort

    from export.onnx_export import export_onnx
    from export.tensorrt.builder import build_engine
    from export.tensorrt.profiles import ShapeProfile
    from export.tensorrt.runtime import load_engine

    torch.manual_seed(0)
    onnx_path = export_onnx("tiny_digits_cls", tmp_path / "cls.onnx")
    engine_path = tmp_path / "cls.plan"
    profile = ShapeProfile((1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))
    manifest = build_engine(onnx_path, engine_path, profile, precision=precision, timing_cache=tmp_path / "t.cache")
    assert manifest.compute_capability == "{}.{}".format(*torch.cuda.get_device_capability())
    engine = load_engine(engine_path, onnx_path=onnx_path)
    pixels = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    want = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(["logits"],
                                                                                       {"pixel_values": pixels})[0]
    got = run_engine(engine, pixels)["logits"]
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    import tensorrt as trt

    inspector = engine.create_engine_inspector()
    layers = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    assert "PaCaAttention" in layers
