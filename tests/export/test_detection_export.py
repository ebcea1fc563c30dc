"""Detection export: the Mask R-CNN `forward_raw` graph (one image per run) in ONNX Runtime vs PyTorch.

Uses the small demo detector (random init); two resolutions, one of them non-square. The detector
has data-dependent output counts (NMS), so the test also checks the counts agree.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.metadata import read_metadata
from export.onnx_export import export_onnx
from export.onnx_function import custom_nodes
from models.registry import get_arch

ATOL = 1e-4
OUTPUTS = ["boxes", "scores", "labels", "mask_probs", "clusters_stage1", "clusters_stage2", "clusters_stage3"]


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    torch.manual_seed(2)
    model = get_arch("demo_digits_det").factory().eval()
    path = export_onnx("demo_digits_det", tmp_path_factory.mktemp("det") / "det.onnx", model=model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return model, path, ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("hw", [(128, 128), (96, 128), (128, 64)])
def test_detection_matches_pytorch(detector, hw):
    model, _, sess = detector
    pixels = torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(hw[0] + hw[1]))
    got = sess.run(None, {"pixel_values": pixels.numpy()})
    with torch.no_grad():
        raw, assignments = model.forward_raw_with_clusters(pixels, hw)
    want = [t.numpy() for t in raw] + [z.numpy() for z in assignments if z is not None]
    assert [o.name for o in sess.get_outputs()] == OUTPUTS
    assert got[0].shape[0] == want[0].shape[0] > 0  # same number of detections, and some at all
    for name, g, w in zip(OUTPUTS, got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        np.testing.assert_allclose(g, w, rtol=0, atol=ATOL, err_msg=name)
    boxes, labels, mask_probs = got[0], got[2], got[3]
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < 10
    assert mask_probs.shape[1:] == (28, 28) and ((mask_probs >= 0) & (mask_probs <= 1)).all()
    assert (boxes[:, 2] <= hw[1]).all() and (boxes[:, 3] <= hw[0]).all()


def test_detection_graph_and_metadata(detector):
    model, path, _ = detector
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    assert len(custom_nodes(proto)) == sum(type(m).__name__ == "PaCaAttentionCore" for m in model.modules()) > 0
    meta = read_metadata(proto)
    assert (meta.task, meta.labels, list(meta.outputs)) == ("detection", "digits10", OUTPUTS)
    assert len(meta.label_names) == 10
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 1 and dims[2].dim_param and dims[3].dim_param
