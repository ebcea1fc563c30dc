"""The artifact contract (`export.metadata`): one writer, one reader with a strict and a lenient mode."""

from __future__ import annotations

import hashlib
import json

import onnx
import pytest
from onnx import TensorProto, helper

from export.metadata import (
    RANDOM_WEIGHTS,
    ArtifactMetadata,
    describe_weights,
    onnx_props,
    read_metadata,
    write_metadata,
)
from models.preprocess_spec import IMAGENET_CLASSIFICATION
from models.tasks import TASKS


def _metadata(**changes) -> ArtifactMetadata:
    base = {"arch": "demo_digits_cls", "task": "classification", "preprocess": IMAGENET_CLASSIFICATION,
            "labels": "digits10", "label_names": tuple(str(i) for i in range(10)),
            "outputs": ("logits", "clusters_stage1", "clusters_stage2"), "weights": "w.safetensors sha256:ab"}
    return ArtifactMetadata(**{**base, **changes})


def test_props_round_trip_through_an_onnx_file(tmp_path) -> None:
    graph = helper.make_graph([helper.make_node("Identity", ["pixel_values"], ["logits"])], "g",
                              [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])])
    model = helper.make_model(graph)
    written = _metadata()
    write_metadata(model, written.to_props())
    write_metadata(model, {"paca.labels": "digits10"})  # replacing a key keeps one entry
    onnx.save(model, str(tmp_path / "m.onnx"))
    props = onnx_props(tmp_path / "m.onnx")
    assert sum(1 for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props if p.key == "paca.labels") == 1
    assert read_metadata(onnx.load(str(tmp_path / "m.onnx"))) == written
    assert ArtifactMetadata.from_props(props) == written
    assert written.cluster_outputs == ("clusters_stage1", "clusters_stage2")
    assert written.main_outputs == ("logits",) and written.label(3) == "3" and written.label(42) == "42"


def test_strict_mode_names_every_missing_key_and_lenient_mode_needs_only_the_preprocessing() -> None:
    partial = {"paca.preprocess": IMAGENET_CLASSIFICATION.to_json()}
    with pytest.raises(ValueError, match=r"paca\.arch, paca\.task.*paca\.outputs"):
        ArtifactMetadata.from_props(partial)
    with pytest.raises(ValueError, match=r"lacks paca\.task"):
        ArtifactMetadata.from_props(partial, lenient=True)
    lenient = ArtifactMetadata.from_props(partial, lenient=True, task="classification",
                                          available_outputs=["logits", "clusters_stage1"])
    assert lenient.outputs == ("logits", "clusters_stage1") and lenient.arch == "unknown"
    assert lenient.label_names == () and lenient.weights == "unknown"


def test_declared_outputs_are_filtered_by_what_the_backend_has_and_main_outputs_are_required() -> None:
    props = _metadata().to_props()
    info = ArtifactMetadata.from_props(props, available_outputs=["clusters_stage1", "logits"])
    assert info.outputs == ("logits", "clusters_stage1")
    with pytest.raises(ValueError, match=r"classification model must have outputs \('logits',\)"):
        ArtifactMetadata.from_props(props, available_outputs=["clusters_stage1"])
    with pytest.raises(ValueError, match="unknown task 'regression'"):
        ArtifactMetadata.from_props({**props, "paca.task": "regression"})


def test_for_arch_describes_a_registered_arch_from_the_registry() -> None:
    outputs = ("boxes", "scores", "labels", "mask_probs", "num_detections")
    info = ArtifactMetadata.for_arch("demo_digits_det", outputs)
    assert info.task == "detection" and info.labels == "digits10" and info.label_names[7] == "7"
    assert info.task_spec.batchable and info.main_outputs == TASKS["detection"].main_outputs == outputs
    assert json.loads(info.to_props()["paca.outputs"]) == list(outputs)
    # An artifact of the one-image contract (no num_detections) no longer fits the service: refused by name.
    old = {**info.to_props(), "paca.outputs": json.dumps(list(outputs[:4]))}
    with pytest.raises(ValueError, match=r"missing \['num_detections'\]"):
        ArtifactMetadata.from_props(old, available_outputs=list(outputs[:4]))


def test_weights_provenance_names_the_file_and_its_digest(tmp_path) -> None:
    checkpoint = tmp_path / "weights.safetensors"
    checkpoint.write_bytes(b"not really weights")
    digest = hashlib.sha256(b"not really weights").hexdigest()
    assert describe_weights(checkpoint) == f"weights.safetensors sha256:{digest}"
    assert describe_weights(None) == RANDOM_WEIGHTS
    assert _metadata(weights=RANDOM_WEIGHTS).random_weights and not _metadata().random_weights
