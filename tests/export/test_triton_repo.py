"""`paca export-triton`: the written config.pbtxt files parse as Triton ModelConfig and say what we meant.

Parsing uses tritonclient's own `model_config_pb2` + protobuf text_format from the tools venv
(.venv-tools; tritonclient must stay out of the main venv), in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from export.metadata import ArtifactMetadata, write_metadata
from export.tensorrt.manifest import EngineManifest, write_manifest
from export.tensorrt.profiles import ShapeProfile
from models.demo.archs import SEG_INPUT_HW
from models.registry import get_arch
from service.cli import app
from tests.support.paths import REPO_ROOT

TOOLS_PYTHON = REPO_ROOT / ".venv-tools" / "bin" / "python"
PARSE = """
import json, sys
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
out = {}
for path in sys.argv[1:]:
    config = text_format.Parse(open(path).read(), model_config_pb2.ModelConfig())
    out[path] = json_format.MessageToDict(config, preserving_proto_field_name=True)
print(json.dumps(out))
"""


def parse_configs(*paths: Path) -> dict[str, dict]:
    if not TOOLS_PYTHON.exists():
        pytest.fail(f"{TOOLS_PYTHON} missing: run `make tools` (tritonclient lives in the tools venv)")
    result = subprocess.run([str(TOOLS_PYTHON), "-c", PARSE, *map(str, paths)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return {Path(k).parent.name: v for k, v in json.loads(result.stdout).items()}


def artifact(path: Path, arch: str, outputs: list[tuple], hw: tuple) -> Path:
    """A small real ONNX graph with the artifact interface (pixel_values in, the task's outputs out).

    Outputs are (name, dims) or (name, dims, element type): 4-d ones are 1×1 convolutions of the input;
    others ("batch", *static dims) are zeros of that shape, for the batch-first detection outputs."""
    spec = get_arch(arch)
    nodes, values, inits = [], [], []
    nodes.append(helper.make_node("Shape", ["pixel_values"], ["batch_dim"], start=0, end=1))
    for i, (name, dims, *kind) in enumerate(outputs):
        elem_type = kind[0] if kind else TensorProto.FLOAT
        if len(dims) == 4:
            channels = dims[1] if isinstance(dims[1], int) else 4
            weight = np.full((channels, 3, 1, 1), 0.1 * (i + 1), np.float32)
            inits.append(helper.make_tensor(f"w{i}", TensorProto.FLOAT, weight.shape, weight.ravel()))
            nodes.append(helper.make_node("Conv", ["pixel_values", f"w{i}"], [name]))
        else:
            inits.append(helper.make_tensor(f"inner{i}", TensorProto.INT64, [len(dims) - 1], dims[1:]))
            inits.append(helper.make_tensor(f"zero{i}", elem_type, [], [0]))
            nodes.append(helper.make_node("Concat", ["batch_dim", f"inner{i}"], [f"shape{i}"], axis=0))
            nodes.append(helper.make_node("Expand", [f"zero{i}", f"shape{i}"], [name]))
        values.append(helper.make_tensor_value_info(name, elem_type, dims))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT,
                                                                         ["batch", 3, *hw])], values, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    names = tuple(f"class{i}" for i in range(10))
    write_metadata(model, ArtifactMetadata(arch, spec.task, spec.preprocess, spec.labels, names,
                                           tuple(output[0] for output in outputs)).to_props())
    onnx.save(model, str(path))
    return path


def test_classification_repository(tmp_path):
    onnx_path = artifact(tmp_path / "cls.onnx", "tiny_digits_cls",
                         [("logits", ["batch", 10, 32, 32]), ("clusters_stage1", ["batch", 8, 32, 32])], (32, 32))
    repo = tmp_path / "repo"
    result = CliRunner().invoke(app, ["export-triton", str(onnx_path), "--repository", str(repo),
                                      "--model-name", "digits", "--max-batch-size", "8", "--preferred-batch", "2",
                                      "--preferred-batch", "8", "--cpu-instances", "3"])
    assert result.exit_code == 0, result.output
    configs = parse_configs(repo / "digits_onnx" / "config.pbtxt", repo / "digits_trt" / "config.pbtxt")
    onnx_cfg, trt_cfg = configs["digits_onnx"], configs["digits_trt"]
    assert onnx_cfg["name"] == "digits_onnx" and onnx_cfg["platform"] == "onnxruntime_onnx"
    assert trt_cfg["platform"] == "tensorrt_plan"
    assert int(onnx_cfg["max_batch_size"]) == 8
    assert onnx_cfg["input"][0] == {"name": "pixel_values", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW",
                                    "dims": ["3", "32", "32"]}
    logits = onnx_cfg["output"][0]
    assert logits["name"] == "logits" and logits["label_filename"] == "labels.txt"
    assert onnx_cfg["dynamic_batching"]["preferred_batch_size"] == [2, 8]
    policy = onnx_cfg["dynamic_batching"]["default_queue_policy"]
    assert policy.get("timeout_action", "REJECT") == "REJECT"  # the enum default is not printed
    assert policy["allow_timeout_override"] is True and policy["max_queue_size"] == 128
    assert onnx_cfg["instance_group"] == [{"name": "digits_onnx_0", "count": 3, "kind": "KIND_CPU"}]
    assert trt_cfg["instance_group"] == [{"name": "digits_trt_0", "count": 1, "kind": "KIND_GPU"}]
    # The artifact's paca.* self-description travels as parameters, for remote PaCa backends to read back.
    for config in (onnx_cfg, trt_cfg):
        assert config["parameters"]["paca.arch"] == {"string_value": "tiny_digits_cls"}
        assert config["parameters"]["paca.task"] == {"string_value": "classification"}
        assert json.loads(config["parameters"]["paca.label_names"]["string_value"])[3] == "class3"
    assert [w["batch_size"] for w in onnx_cfg["model_warmup"]] == [1, 2, 8]
    assert onnx_cfg["model_warmup"][0]["inputs"]["pixel_values"]["dims"] == ["3", "32", "32"]
    assert (repo / "digits_onnx" / "1" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    assert (repo / "digits_onnx" / "labels.txt").read_text().split() == [f"class{i}" for i in range(10)]
    readme = (repo / "README.md").read_text()
    assert "LD_PRELOAD" in readme and "--backend-config=tensorrt,plugins=" in readme and "AOT" in readme
    assert "paca build-engine cls.onnx" in readme  # no engine given yet: says how to make one
    sess = ort.InferenceSession(str(repo / "digits_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.run(["logits"], {"pixel_values": np.ones((2, 3, 32, 32), np.float32)})[0].shape == (2, 10, 32, 32)


def test_dense_and_detection_repositories_with_engine(tmp_path):
    seg = artifact(tmp_path / "seg.onnx", "demo_digits_seg", [("seg_logits", ["batch", 11, "h", "w"])], ("H", "W"))
    det = artifact(tmp_path / "det.onnx", "demo_digits_det", [
        ("boxes", ["batch", 20, 4]), ("scores", ["batch", 20]), ("labels", ["batch", 20], TensorProto.INT64),
        ("mask_probs", ["batch", 20, 28, 28]), ("num_detections", ["batch"], TensorProto.INT64),
        ("clusters_stage1", ["batch", 8, "h", "w"])], ("H", "W"))
    engine = tmp_path / "seg.plan"
    engine.write_bytes(b"PLAN")
    write_manifest(engine, EngineManifest("10.13.3.9", "NVIDIA H100", "9.0", "fp16",
                                          (ShapeProfile((1, 3, 32, 32), (8, 3, 160, 160), (16, 3, 160, 160)),),
                                          "00" * 32, "seg.onnx"))
    repo = tmp_path / "repo"
    runner = CliRunner()
    assert runner.invoke(app, ["export-triton", str(seg), "-r", str(repo), "--engine", str(engine)]).exit_code == 0
    assert runner.invoke(app, ["export-triton", str(det), "-r", str(repo)]).exit_code == 0
    configs = parse_configs(*(repo / name / "config.pbtxt" for name in
                              ("demo_digits_seg_trt", "demo_digits_seg_onnx", "demo_digits_det_onnx")))
    seg_trt = configs["demo_digits_seg_trt"]
    assert seg_trt["input"][0]["dims"] == ["3", "-1", "-1"]
    assert seg_trt["default_model_filename"] == "model.plan" and seg_trt["cc_model_filenames"] == {"9.0": "model.plan"}
    assert seg_trt["parameters"]["execution_context_allocation_strategy"]["string_value"] == "ON_PROFILE_CHANGE"
    # Warm-up at the landscape size of the preprocessing bound (the demo segmenter: 160×160).
    assert seg_trt["model_warmup"][0]["inputs"]["pixel_values"]["dims"] == ["3", *map(str, SEG_INPUT_HW)]
    assert (repo / "demo_digits_seg_trt" / "1" / "model.plan").read_bytes() == b"PLAN"
    assert (repo / "demo_digits_seg_trt" / "1" / "model.plan.json").is_file()
    # Detection batches like the others (images of one padded size); the batch-only count is Triton's
    # dims [1] with an empty reshape.
    det_cfg = configs["demo_digits_det_onnx"]
    assert int(det_cfg["max_batch_size"]) == 16 and "dynamic_batching" in det_cfg
    assert det_cfg["input"][0]["dims"] == ["3", "-1", "-1"]
    outputs = {o["name"]: o for o in det_cfg["output"]}
    assert outputs["boxes"]["dims"] == ["20", "4"] and outputs["mask_probs"]["dims"] == ["20", "28", "28"]
    assert outputs["labels"]["data_type"] == "TYPE_INT64" and "reshape" not in outputs["labels"]
    assert outputs["num_detections"] == {"name": "num_detections", "data_type": "TYPE_INT64", "dims": ["1"],
                                         "reshape": {}}
    assert [w["batch_size"] for w in det_cfg["model_warmup"]] == [1, 4, 8]
    readme = (repo / "README.md").read_text()
    assert "same shape" in readme and "`num_detections`" in readme
    sess = ort.InferenceSession(str(repo / "demo_digits_det_onnx" / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    counts = sess.run(["num_detections"], {"pixel_values": np.zeros((3, 3, 64, 96), np.float32)})[0]
    assert counts.shape == (3,) and counts.dtype == np.int64


def test_engine_without_manifest_is_refused(tmp_path):
    onnx_path = artifact(tmp_path / "cls.onnx", "tiny_digits_cls", [("logits", ["batch", 10, 32, 32])], (32, 32))
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"PLAN")
    result = CliRunner().invoke(app, ["export-triton", str(onnx_path), "-r", str(tmp_path / "r"), "--engine",
                                      str(engine)])
    assert result.exit_code == 2 and "manifest" in result.output
