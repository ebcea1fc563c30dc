"""Detection export: the Mask R-CNN `forward_raw` graph (batched, per-image padded outputs) in ONNX Runtime.

The demo detector with its committed trained weights, on held-out scenes (crops for other sizes). Its
score threshold is raised to 0.3 so that the images have different numbers of detections, all below the
20 rows per image: the padding is exercised. Checks: ONNX Runtime vs PyTorch at three resolutions; a batch
of three same-size images gives each image what it gets alone — bit for bit with one intra-op thread,
to float rounding with two — and PyTorch's numbers.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import models
from demo import evaluate
from demo.train import to_input
from export.metadata import read_metadata
from export.onnx_export import export_onnx
from export.onnx_function import custom_nodes
from models.demo.archs import weights_path

ATOL = 1e-4
ROWS = 20  # the demo detector's detections_per_img
MAIN = ["boxes", "scores", "labels", "mask_probs", "num_detections"]
OUTPUTS = [*MAIN, "clusters_stage1", "clusters_stage2", "clusters_stage3"]


def _session(path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    model = models.build("demo_digits_det", weights_path("demo_digits_det")).eval()
    model.roi_heads.score_thresh = 0.3
    path = export_onnx("demo_digits_det", tmp_path_factory.mktemp("det") / "det.onnx", model=model)
    return model, path, _session(path, 2)


@pytest.fixture(scope="module")
def scenes() -> torch.Tensor:
    """Three held-out scenes, preprocessed (128×128, a multiple of 32: no padding)."""
    return to_input(np.stack([s.image for s in evaluate.heldout_scenes(3)]), "demo_digits_det")


def _torch(model, pixels: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        raw, assignments = model.forward_raw_with_clusters(pixels, tuple(pixels.shape[-2:]))
    return [t.numpy() for t in raw] + [z.numpy() for z in assignments if z is not None]


def _check_padding(outputs: list[np.ndarray]) -> None:
    boxes, scores, labels, mask_probs, counts = outputs[:5]
    for image, count in enumerate(counts):
        assert (scores[image, :count] > 0.3).all() and (np.diff(scores[image, :count]) <= 0).all()
        assert not boxes[image, count:].any() and not scores[image, count:].any()
        assert not labels[image, count:].any() and not mask_probs[image, count:].any()


@pytest.mark.parametrize("hw", [(128, 128), (96, 128), (128, 64)])
def test_detection_matches_pytorch(detector, scenes, hw):
    model, _, sess = detector
    pixels = scenes[1:2, :, : hw[0], : hw[1]].contiguous()
    got = sess.run(None, {"pixel_values": pixels.numpy()})
    want = _torch(model, pixels)
    assert [o.name for o in sess.get_outputs()] == OUTPUTS
    count = int(got[4][0])
    assert got[4].tolist() == want[4].tolist() and 0 < count < ROWS  # same detections, some, and padding
    for name, g, w in zip(OUTPUTS, got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        np.testing.assert_allclose(g, w, rtol=0, atol=ATOL, err_msg=name)
    _check_padding(got)
    boxes, labels, mask_probs = got[0][0, :count], got[2][0, :count], got[3][0, :count]
    assert got[0].shape == (1, ROWS, 4) and got[3].shape == (1, ROWS, 28, 28)
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < 10
    assert ((mask_probs >= 0) & (mask_probs <= 1)).all()
    assert (boxes[:, 2] <= hw[1]).all() and (boxes[:, 3] <= hw[0]).all()


def _batched_and_alone(sess: ort.InferenceSession, pixels: torch.Tensor) -> tuple[list, list[list]]:
    batched = sess.run(None, {"pixel_values": pixels.numpy()})
    alone = [sess.run(None, {"pixel_values": pixels[i : i + 1].numpy()}) for i in range(len(pixels))]
    for outputs in alone:
        assert [o.shape for o in outputs] == [(1, *b.shape[1:]) for b in batched]
    return batched, alone


def test_batch_of_three_equals_each_alone_and_pytorch(detector, scenes):
    """Same-size images in one run: each image gets exactly its alone-outputs.

    Every step after the backbone is per image (NMS per image, each image's own offsets, per-RoI heads).
    With one intra-op thread ONNX Runtime computes each image's rows with the same kernels in the same
    order at any batch size: bit-identical. With two threads it splits some reductions by the total work,
    so floats agree to rounding only — up to about 1e-4 relative after the RoI heads' convolutions and the
    mask sigmoid (seen: 1.5e-5 absolute on a 0.3 mask probability) — and the discrete outputs (counts,
    labels) are identical."""
    model, path, sess = detector
    batched, alone = _batched_and_alone(_session(path, 1), scenes)
    counts = batched[4].tolist()
    assert len(set(counts)) > 1 and all(0 < c < ROWS for c in counts), counts  # padding differs per image
    _check_padding(batched)
    for image, outputs in enumerate(alone):
        for name, one, rows in zip(OUTPUTS, outputs, batched, strict=True):
            np.testing.assert_array_equal(one[0], rows[image], err_msg=f"{name}, image {image}, 1 thread")
    threaded, threaded_alone = _batched_and_alone(sess, scenes)
    for image, outputs in enumerate(threaded_alone):
        for name, one, rows in zip(OUTPUTS, outputs, threaded, strict=True):
            if one.dtype == np.int64:
                np.testing.assert_array_equal(one[0], rows[image], err_msg=f"{name}, image {image}, 2 threads")
            np.testing.assert_allclose(one[0], rows[image], rtol=1e-4, atol=1e-4, err_msg=f"{name}, image {image}")
    for name, g, w in zip(OUTPUTS, batched, _torch(model, scenes), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        np.testing.assert_allclose(g, w, rtol=0, atol=ATOL, err_msg=name)


def test_detection_graph_and_metadata(detector):
    model, path, _ = detector
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    assert len(custom_nodes(proto)) == sum(type(m).__name__ == "PaCaAttentionCore" for m in model.modules()) > 0
    meta = read_metadata(proto)
    assert (meta.task, meta.labels, list(meta.outputs)) == ("detection", "digits10", OUTPUTS)
    assert len(meta.label_names) == 10
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    batch = dims[0].dim_param
    assert batch and dims[2].dim_param and dims[3].dim_param  # dynamic batch, H and W
    shapes = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
    assert shapes["boxes"] == [batch, ROWS, 4] and shapes["scores"] == shapes["labels"] == [batch, ROWS]
    assert shapes["mask_probs"] == [batch, ROWS, 28, 28] and shapes["num_detections"] == [batch]
    assert all(shape[0] == batch for shape in shapes.values())
    # The per-image NMS is the standard op with the image batch as its batch axis (RPN and box head).
    assert sum(node.op_type == "NonMaxSuppression" for node in proto.graph.node) == 2
