"""ONNX export parity: ONNX Runtime runs the exported file (custom op + function body) to PyTorch's numbers.

Small demo archs (random init) for the batch / resolution sweep, plus the official PaCa-Tiny with the
golden weights and golden outputs of the reference implementation.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.numpy import load_file

from export.metadata import read_metadata
from export.onnx_export import export_onnx
from export.onnx_function import custom_nodes, inline_attention, strip_attention_function
from export.op_spec import OP_DOMAIN, OP_NAME
from models.attention import PaCaAttentionCore
from models.registry import get_arch

ATOL = 1e-4
GOLDEN_ARCH = "pacavit_tiny_p2cconv_100_0"


def session(path_or_bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path_or_bytes, options, providers=["CPUExecutionProvider"])


def random_pixels(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def torch_outputs(model: torch.nn.Module, pixels: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        main, assignments = model.forward_with_clusters(pixels)
    return [main.numpy(), *(z.numpy() for z in assignments if z is not None)]


def assert_parity(sess: ort.InferenceSession, model: torch.nn.Module, pixels: torch.Tensor) -> None:
    got = sess.run(None, {"pixel_values": pixels.numpy()})
    want = torch_outputs(model, pixels)
    assert len(got) == len(want)
    for name, g, w in zip([o.name for o in sess.get_outputs()], got, want, strict=True):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, rtol=0, atol=ATOL, err_msg=name)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    torch.manual_seed(0)
    model = get_arch("tiny_digits_cls").factory().eval()
    path = export_onnx("tiny_digits_cls", tmp_path_factory.mktemp("cls") / "cls.onnx", model=model)
    return model, path


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    torch.manual_seed(1)
    model = get_arch("demo_digits_seg").factory().eval()
    path = export_onnx("demo_digits_seg", tmp_path_factory.mktemp("seg") / "seg.onnx", model=model)
    return model, path


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_classification_matches_pytorch(classifier, batch):
    model, path = classifier
    assert_parity(session(str(path)), model, random_pixels(batch, 32, 32, seed=batch))


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("hw", [(64, 64), (64, 96)])
def test_segmentation_matches_pytorch(segmenter, batch, hw):
    model, path = segmenter
    sess = session(str(path))
    pixels = random_pixels(batch, *hw, seed=batch + hw[1])
    assert_parity(sess, model, pixels)
    seg_logits = sess.run(["seg_logits"], {"pixel_values": pixels.numpy()})[0]
    assert seg_logits.shape[-2:] == (-(-hw[0] // 4), -(-hw[1] // 4))  # 1/4 resolution, not upsampled


def test_segmentation_size_not_multiple_of_32(segmenter):
    model, path = segmenter
    assert_parity(session(str(path)), model, random_pixels(2, 50, 70, seed=7))


@pytest.mark.parametrize("fixture_name", ["classifier", "segmenter"])
def test_graph_has_custom_nodes_and_body(fixture_name, request):
    model, path = request.getfixturevalue(fixture_name)
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    cores = [m for m in model.modules() if isinstance(m, PaCaAttentionCore)]
    nodes = custom_nodes(proto)
    assert len(nodes) == len(cores) > 0
    for node, core in zip(nodes, cores, strict=True):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["num_heads"] == core.num_heads
        assert attrs["scale"] == pytest.approx(core.scale, rel=1e-6)
        assert attrs["plugin_namespace"] == b"paca" and attrs["plugin_version"] == b"1"
    functions = [f for f in proto.functions if (f.domain, f.name) == (OP_DOMAIN, OP_NAME)]
    assert len(functions) == 1
    model_opset = {o.domain: o.version for o in proto.opset_import}
    assert {o.domain: o.version for o in functions[0].opset_import}[""] == model_opset[""] >= 18
    assert model_opset[OP_DOMAIN] == 1
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def test_dynamic_axes(classifier, segmenter):
    cls_input = onnx.load(str(classifier[1])).graph.input[0].type.tensor_type.shape.dim
    seg_input = onnx.load(str(segmenter[1])).graph.input[0].type.tensor_type.shape.dim
    assert cls_input[0].dim_param and [d.dim_value for d in cls_input[1:]] == [3, 32, 32]
    assert seg_input[0].dim_param and seg_input[1].dim_value == 3
    assert seg_input[2].dim_param and seg_input[3].dim_param


def test_metadata_describes_the_artifact(classifier, segmenter):
    for arch, (_, path), outputs in (
        ("tiny_digits_cls", classifier, ["logits", "clusters_stage1", "clusters_stage2", "clusters_stage3"]),
        ("demo_digits_seg", segmenter, ["seg_logits", "clusters_stage1", "clusters_stage2", "clusters_stage3"]),
    ):
        proto = onnx.load(str(path), load_external_data=False)
        meta = read_metadata(proto)
        spec = get_arch(arch)
        assert (meta.arch, meta.task, meta.labels) == (arch, spec.task, spec.labels)
        assert meta.preprocess == spec.preprocess
        assert list(meta.outputs) == outputs == [o.name for o in proto.graph.output]
        labels_file = (spec.labels + ".txt")
        assert len(meta.label_names) == len(json.loads(
            {p.key: p.value for p in proto.metadata_props}["paca.label_names"])) > 0, labels_file
        assert meta.exporter_version


def test_inline_graph_is_plugin_free_and_equal(segmenter):
    model, path = segmenter
    inlined = inline_attention(onnx.load(str(path)))
    onnx.checker.check_model(inlined, full_check=True)
    assert not [n for n in inlined.graph.node if n.domain == OP_DOMAIN]
    assert OP_DOMAIN not in {o.domain for o in inlined.opset_import}
    assert_parity(session(inlined.SerializeToString()), model, random_pixels(3, 64, 96, seed=11))


def test_without_function_body_onnxruntime_refuses(classifier):
    plugin_only = strip_attention_function(onnx.load(str(classifier[1])))
    with pytest.raises(Exception, match="PaCaAttention"):
        session(plugin_only.SerializeToString())


def test_verify_catches_a_different_model(classifier):
    from export.verify import verify_export

    _, path = classifier
    single, batched = verify_export(path, classifier[0], batches=(1, 3))
    assert batched.worst < ATOL and not single.batched_vs_alone
    assert set(batched.batched_vs_alone) == {"logits", "clusters_stage1", "clusters_stage2", "clusters_stage3"}
    assert max(batched.batched_vs_alone.values()) < ATOL
    torch.manual_seed(123)
    other = get_arch("tiny_digits_cls").factory().eval()
    with pytest.raises(AssertionError, match=r"max \|ONNX Runtime − PyTorch\|"):
        verify_export(path, other)


def test_export_rejects_old_opset(tmp_path):
    with pytest.raises(ValueError, match="opset"):
        export_onnx("tiny_digits_cls", tmp_path / "x.onnx", opset=17)


@pytest.mark.slow
def test_official_tiny_matches_golden_outputs(tmp_path, golden_reference_dir):
    """PaCa-Tiny at 224² with the reference weights: ORT vs the reference implementation and vs PyTorch."""
    checkpoint = golden_reference_dir / f"golden_{GOLDEN_ARCH}.safetensors"
    golden = load_file(str(golden_reference_dir / f"golden_{GOLDEN_ARCH}_io.safetensors"))
    path = export_onnx(GOLDEN_ARCH, tmp_path / "tiny.onnx", checkpoint=checkpoint)
    sess = session(str(path))
    logits, clusters1 = sess.run(["logits", "clusters_stage1"], {"pixel_values": golden["input"]})
    np.testing.assert_allclose(logits, golden["logits"], rtol=0, atol=ATOL)
    z = golden["cluster_assignment_stage1_block0"].reshape(clusters1.shape)
    np.testing.assert_allclose(clusters1, z, rtol=0, atol=1e-6)
    import models

    model = models.build(GOLDEN_ARCH, checkpoint)
    assert_parity(sess, model, torch.from_numpy(golden["input"][:1]))
