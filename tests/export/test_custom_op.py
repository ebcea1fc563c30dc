"""The `paca::PaCaAttention` op on its own: function body vs a float64 reference, attribute/shape helpers, CLI."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from typer.testing import CliRunner

from export.metadata import read_metadata
from export.onnx_function import attach_attention_function, custom_nodes, inline_attention
from export.op_spec import OP_DOMAIN, OP_NAME, op_attributes, output_shape, parse_attributes


def single_op_model(num_heads: int, scale: float, opset: int = 18) -> onnx.ModelProto:
    node = helper.make_node(OP_NAME, ["q", "k", "v"], ["out"], domain=OP_DOMAIN, **op_attributes(num_heads, scale))
    sym = ["B", "N", "C"], ["B", "M", "C"]
    graph = helper.make_graph(
        [node], "attention",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, sym[0]),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, sym[1]),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, sym[1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, sym[0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return attach_attention_function(model)


def reference_attention(q, k, v, num_heads, scale):
    """Float64 multi-head attention written independently with einsum."""
    q, k, v = (torch.as_tensor(t, dtype=torch.float64) for t in (q, k, v))
    b, n, c = q.shape
    d = c // num_heads
    qh = q.reshape(b, n, num_heads, d)
    kh = k.reshape(b, -1, num_heads, d)
    vh = v.reshape(b, -1, num_heads, d)
    weights = torch.einsum("bnhd,bmhd->bhnm", qh, kh).mul(scale).softmax(dim=-1)
    return torch.einsum("bhnm,bmhd->bnhd", weights, vh).reshape(b, n, c).numpy()


@pytest.mark.parametrize(("batch", "n", "m", "heads", "head_dim"),
                         [(1, 49, 100, 2, 24), (3, 196, 49, 5, 40), (2, 17, 7, 1, 48), (8, 64, 64, 4, 32)])
def test_function_body_matches_float64_reference(batch, n, m, heads, head_dim):
    scale = 1 / math.sqrt(head_dim)
    model = single_op_model(heads, scale)
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(batch * n)
    c = heads * head_dim
    q, k, v = (rng.standard_normal((batch, rows, c)).astype(np.float32) for rows in (n, m, m))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"q": q, "k": k, "v": v})[0]
    np.testing.assert_allclose(got, reference_attention(q, k, v, heads, scale), rtol=0, atol=1e-5)
    inlined = inline_attention(model)
    assert not custom_nodes(inlined)
    sess = ort.InferenceSession(inlined.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"q": q, "k": k, "v": v})[0], got, rtol=0, atol=1e-5)


def test_function_opset_follows_model():
    model = single_op_model(2, 0.25, opset=20)
    assert {o.domain: o.version for o in model.functions[0].opset_import}[""] == 20
    onnx.checker.check_model(model, full_check=True)


def test_attribute_parsing_and_validation():
    attrs = op_attributes(4, 0.125)
    assert attrs == {"num_heads": 4, "scale": 0.125, "plugin_namespace": "paca", "plugin_version": "1"}
    parsed = parse_attributes({"num_heads": np.array([4], dtype=np.int32), "scale": np.array([0.125])})
    assert (parsed.num_heads, parsed.scale) == (4, 0.125)
    with pytest.raises(ValueError, match="num_heads"):
        parse_attributes({"scale": 0.1})
    with pytest.raises(ValueError, match="num_heads must be"):
        op_attributes(0, 0.1)
    with pytest.raises(ValueError, match="scale"):
        op_attributes(2, float("nan"))


def test_output_shape_checks():
    assert output_shape(("B", "N", 64), ("B", 49, 64), ("B", 49, 64), 4) == ("B", "N", 64)
    with pytest.raises(ValueError, match="divisible"):
        output_shape((2, 10, 30), (2, 5, 30), (2, 5, 30), 4)
    with pytest.raises(ValueError, match="same shape"):
        output_shape((2, 10, 32), (2, 5, 32), (2, 6, 32), 4)
    with pytest.raises(ValueError, match="rank-3"):
        output_shape((2, 10), (2, 5, 32), (2, 5, 32), 4)


def test_cli_export_inline(tmp_path):
    from service.cli import app

    output = tmp_path / "cls_inline.onnx"
    torch.manual_seed(0)
    result = CliRunner().invoke(app, ["export", "--arch", "tiny_digits_cls", "--output", str(output), "--inline",
                                      "--verify"])
    assert result.exit_code == 0, result.output
    assert "verified batch 1 32x32" in result.output and "verified batch 3 32x32" in result.output
    proto = onnx.load(str(output))
    assert not custom_nodes(proto) and not proto.functions
    assert read_metadata(proto).arch == "tiny_digits_cls"
    sess = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"pixel_values": np.zeros((3, 3, 32, 32), np.float32)})[0]
    assert logits.shape == (3, 10) and np.isfinite(logits).all()


def test_cli_rejects_unknown_arch(tmp_path):
    from service.cli import app

    result = CliRunner().invoke(app, ["export", "--arch", "no_such_arch", "--output", str(tmp_path / "x.onnx")])
    assert result.exit_code != 0
    assert "unknown arch" in result.output
