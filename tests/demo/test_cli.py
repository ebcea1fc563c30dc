"""`paca demo ensure`: a cached artifact is re-exported when its weights are newer or its contract is another."""

from __future__ import annotations

import os

import onnx
from onnx import TensorProto, helper

from demo.artifacts import artifact_is_current
from export.metadata import EXPORTER_VERSION, write_metadata


def _artifact(path, version: str):
    graph = helper.make_graph([helper.make_node("Identity", ["pixel_values"], ["logits"])], "g",
                              [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph)
    write_metadata(model, {"paca.exporter_version": version})
    onnx.save(model, str(path))
    return path


def test_artifact_is_current_only_for_this_exporter_version_and_newer_than_its_weights(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    current = _artifact(tmp_path / "current.onnx", EXPORTER_VERSION)
    old_contract = _artifact(tmp_path / "old.onnx", "1.1.0")
    assert artifact_is_current(current, weights)
    assert not artifact_is_current(old_contract, weights)  # e.g. a one-image detector: outputs no longer fit
    assert not artifact_is_current(tmp_path / "missing.onnx", weights)
    stamp = weights.stat().st_mtime
    os.utime(current, (stamp - 10, stamp - 10))  # exported before the weights changed
    assert not artifact_is_current(current, weights)
