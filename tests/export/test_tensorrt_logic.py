"""TensorRT support code that runs without TensorRT: profiles, precision, manifest, trtexec, plugin logic,
the AOT PTX compile, and the builder/runtime driven by a FAKE `tensorrt` module.

The fake (`FakeTensorRT` below) is a test double that records calls; it checks our use of the
documented Python API and never counts as TensorRT being verified. The plugin itself runs through
TensorRT's real plugin layer in test_tensorrt_plugin_layer.py.
Real-TensorRT tests live in test_tensorrt_gpu.py and skip without TensorRT and CUDA.
"""

from __future__ import annotations

import importlib.util
import json
import re
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from export.metadata import ArtifactMetadata, write_metadata
from export.onnx_function import attach_attention_function
from export.op_spec import OP_DOMAIN, OP_NAME, op_attributes
from export.tensorrt import plugin_logic
from export.tensorrt.builder import EngineBuildError, build_engine
from export.tensorrt.manifest import (
    EngineManifest,
    EngineMismatchError,
    MachineInfo,
    cache_key,
    check_manifest,
    file_sha256,
    manifest_path,
    read_manifest,
)
from export.tensorrt.precision import fp16_graph, plan_precision
from export.tensorrt.profiles import ShapeProfile, default_profile, parse_hw
from export.tensorrt.runtime import load_engine
from export.tensorrt.trtexec import trtexec_command, trtexec_script
from export.tensorrt.versions import UnsupportedTensorRTError, parse_version, require_supported
from models.preprocess_spec import ADE20K_SEGMENTATION, COCO_DETECTION, IMAGENET_CLASSIFICATION

H100 = MachineInfo("10.13.3.9", "NVIDIA H100 80GB HBM3", "9.0")


# ----------------------------------------------------------------------------------------- profiles

def test_default_profiles_cover_what_the_service_sends():
    cls = default_profile("classification", IMAGENET_CLASSIFICATION, max_batch=16, opt_batch=4)
    assert (cls.min, cls.opt, cls.max) == ((1, 3, 224, 224), (4, 3, 224, 224), (16, 3, 224, 224))
    seg = default_profile("segmentation", ADE20K_SEGMENTATION)
    assert seg.opt == (8, 3, 512, 2048) and seg.max == (32, 3, 2048, 2048)
    assert seg.covers((3, 3, 512, 683)) and seg.covers((1, 3, 683, 512))
    det = default_profile("detection", COCO_DETECTION, max_batch=32)  # detection batches same-size images too
    assert (det.min[0], det.opt[0], det.max[0]) == (1, 8, 32)
    assert det.max == (32, 3, 1344, 1344) and det.covers((4, 3, 800, 1216))  # 1333 rounded up to /32


def test_profile_validation_and_parsing():
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile((1, 3, 64, 64), (8, 3, 32, 64), (8, 3, 64, 64))
    with pytest.raises(ValueError, match="3 channels"):
        ShapeProfile((1, 1, 64, 64), (1, 1, 64, 64), (1, 1, 64, 64))
    assert parse_hw("512x640") == (512, 640)
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        parse_hw("512*640")
    profile = default_profile("classification", IMAGENET_CLASSIFICATION)
    assert ShapeProfile.from_json(json.loads(json.dumps(profile.to_json()))) == profile


# ---------------------------------------------------------------------------------------- precision

def test_precision_plans():
    """Findings 8/9: every engine strongly typed (precision from the graph), TF32 cleared for parity."""
    fp16, fp32 = plan_precision("fp16"), plan_precision("fp32")
    assert fp16.needs_graph_casts and fp16.strongly_typed and fp16.cleared_flags == ("TF32",)
    assert not fp32.needs_graph_casts and fp32.strongly_typed and fp32.cleared_flags == ("TF32",)
    with pytest.raises(ValueError, match="unknown precision"):
        plan_precision("int8")


def attention_artifact(num_heads: int = 2, head_dim: int = 16) -> onnx.ModelProto:
    """A tiny PaCa artifact: Linear → PaCaAttention → output, with metadata (no export needed)."""
    channels = num_heads * head_dim
    rng = np.random.default_rng(0)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [channels, channels],
                                rng.standard_normal((channels, channels)).astype(np.float32).ravel())
    nodes = [
        helper.make_node("MatMul", ["tokens", "w"], ["q"]),
        helper.make_node(OP_NAME, ["q", "tokens", "tokens"], ["out"], domain=OP_DOMAIN,
                         **op_attributes(num_heads, head_dim ** -0.5)),
    ]
    tokens = helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["B", "N", channels])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", "N", channels])
    graph = helper.make_graph(nodes, "g", [tokens], [out], [weight])
    model = attach_attention_function(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    write_metadata(model, ArtifactMetadata("demo_digits_cls", "classification", IMAGENET_CLASSIFICATION, "digits10",
                                           tuple(str(i) for i in range(10)), ("out",)).to_props())
    return model


def test_fp16_graph_runs_and_stays_close():
    model = attention_artifact()
    half = fp16_graph(model)
    assert model.graph.initializer[0].data_type == TensorProto.FLOAT  # the input model is left alone
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # fp32 I/O kept
    assert any(t.data_type == TensorProto.FLOAT16 for t in half.graph.initializer)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # ORT would fold the casts
    tokens = np.random.default_rng(1).standard_normal((2, 20, 32)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), options).run(None, {"tokens": tokens})[0]
    got = ort.InferenceSession(half.SerializeToString(), options).run(None, {"tokens": tokens})[0]
    assert 0 < np.abs(got - want).max() < 5e-2


# ----------------------------------------------------------------------------------------- manifest

def make_manifest(onnx_sha: str = "ab" * 32, machine: MachineInfo = H100) -> EngineManifest:
    return EngineManifest(machine.tensorrt_version, machine.gpu_name, machine.compute_capability, "fp16",
                          (default_profile("classification", IMAGENET_CLASSIFICATION),), onnx_sha, "m.onnx")


def test_manifest_round_trip_and_mismatch_messages(tmp_path):
    manifest = make_manifest()
    assert EngineManifest.from_json(manifest.to_json()) == manifest
    check_manifest(manifest, H100)
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10\.13\.3\.9, this machine has 11\.4\.0\.106"):
        check_manifest(manifest, MachineInfo("11.4.0.106", "NVIDIA H100 80GB HBM3", "9.0"))
    with pytest.raises(EngineMismatchError, match=r"compute capability 9\.0 .*this GPU is 8\.0 \(NVIDIA A100"):
        check_manifest(manifest, MachineInfo("10.13.3.9", "NVIDIA A100-SXM4-80GB", "8.0"))
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"other")
    with pytest.raises(EngineMismatchError, match="another ONNX file"):
        check_manifest(manifest, H100, onnx_file)
    with pytest.raises(EngineMismatchError, match=r"manifest model\.plan\.json is missing"):
        read_manifest(tmp_path / "model.plan")
    assert cache_key(H100, "fp16") == "trt10.13-sm90-paca1-fp16"


def test_trtexec_flags_follow_the_tensorrt_major():
    """Finding 12: no --fp16/--precisionConstraints (gone in TensorRT 11); --stronglyTyped only on 10."""
    profile = ShapeProfile((1, 3, 64, 64), (4, 3, 128, 128), (8, 3, 256, 256))
    argv = trtexec_command("m.onnx", "m.plan", profile, trt_major=10, timing_cache="t.cache")
    assert argv[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.plan"]
    assert "--minShapes=pixel_values:1x3x64x64" in argv and "--maxShapes=pixel_values:8x3x256x256" in argv
    assert "--timingCacheFile=t.cache" in argv and "--noTF32" in argv and "--stronglyTyped" in argv
    trt11 = trtexec_command("m.onnx", "m.plan", profile, trt_major=11)
    assert "--noTF32" in trt11 and "--stronglyTyped" not in trt11
    for removed in ("--fp16", "--precisionConstraints=obey", "--best"):
        assert removed not in argv + trt11
    lines = trtexec_script("m.onnx", "m.plan", profile, precision="fp16", trt_major=11)
    assert lines[0] == "python -m export.tensorrt.precision m.onnx m.fp16.onnx"
    assert "--onnx=m.fp16.onnx" in lines[1]
    with pytest.raises(ValueError, match="not supported"):
        trtexec_command("m.onnx", "m.plan", profile, trt_major=8)


# ------------------------------------------------------------------------------------- plugin logic

def test_plugin_tactics_and_grid():
    from models.kernels.attention_triton import CONFIGS

    assert plugin_logic.tactic_ids() == list(range(1, len(CONFIGS) + 1))
    assert plugin_logic.config_for_tactic(0) == CONFIGS[plugin_logic.DEFAULT_TACTIC - 1]
    with pytest.raises(ValueError, match="unknown PaCaAttention tactic"):
        plugin_logic.config_for_tactic(99)
    config = plugin_logic.config_for_tactic(1)
    assert plugin_logic.launch_grid(3, 3136, 2, 1) == (-(-3136 // config.block_n), 6)
    assert plugin_logic.triton_dtype("DataType.HALF") == "fp16"
    with pytest.raises(ValueError, match="supports"):
        plugin_logic.triton_dtype("DataType.INT8")


def test_tactics_advertised_per_tensorrt_version():
    """Finding 10: several AOT tactics only from 11.1; before, TensorRT's default tactic (none advertised)."""
    assert plugin_logic.advertised_tactics([1, 2], (11, 4)) == [1, 2]
    assert plugin_logic.advertised_tactics([1, 2], (11, 1)) == [1, 2]
    assert plugin_logic.advertised_tactics([1, 2], (11, 0)) is None
    assert plugin_logic.advertised_tactics([1, 2, 3], (10, 9)) is None
    with pytest.raises(ValueError, match="default PaCaAttention tactic"):
        plugin_logic.advertised_tactics([1], (10, 13))
    with pytest.raises(ValueError, match="no PaCaAttention tactic fits"):
        plugin_logic.advertised_tactics([], (11, 4))
    assert plugin_logic.fitting_tactics({1: 16384, 2: 49152, 3: 65536, 4: 98304}.get) == [1, 2]


def test_tensorrt_version_gate():
    assert require_supported("10.9.0.34") == (10, 9)
    assert require_supported("11.4.0.106") == (11, 4)
    with pytest.raises(UnsupportedTensorRTError, match=r"TensorRT 10\.8\.0\.43 is too old.*>= 10\.9"):
        require_supported("10.8.0.43")
    with pytest.raises(ValueError, match="cannot read a TensorRT version"):
        parse_version("ten")


def test_entry_names_are_unique_and_renaming_keeps_the_ptx_whole():
    """Finding 7: every specialisation gets its own entry name (dtype, heads, head dim, tactic, PTX hash)."""
    ptx = (".visible .entry k(\n\t.param .u64 k_param_0,\n\t.param .u32 k_param_1\n)\n"
           "{ ld.param.u64 %rd1, [k_param_0]; }")
    name = plugin_logic.entry_name("fp16", 4, 48, 2, ptx)
    assert re.fullmatch(r"paca_attn_fp16_h4_d48_t2_[0-9a-f]{12}", name)
    assert name != plugin_logic.entry_name("fp16", 4, 48, 2, ptx.replace("u32", "u64"))
    renamed = plugin_logic.rename_entry(ptx, "k", name)
    assert f".entry {name}(" in renamed and f"[{name}_param_0]" in renamed and "k_param" not in renamed
    with pytest.raises(ValueError, match=r"no \.entry"):
        plugin_logic.rename_entry(ptx, "other", name)


@pytest.mark.slow
def test_aot_kernel_compiles_to_ptx_for_sm90(tmp_path):
    """The plugin's compile (`aot_kernel.compile_attention`) for Hopper on this CPU-only machine: scratch
    parameters trimmed (q, k, v, N, M, out — the QDP launch order), unique entry, 16-byte alignment hints
    (vectorised global loads), and the PTX still assembles with ptxas."""
    import os
    import subprocess

    import triton

    from export.tensorrt.aot_kernel import compile_attention

    kernel = compile_attention("fp32", num_heads=5, channels=200, scale=40 ** -0.5, tactic=1, capability=90)
    config = plugin_logic.config_for_tactic(1)
    assert kernel.num_warps == config.num_warps and kernel.block_x == 32 * config.num_warps
    assert kernel.name.startswith("paca_attn_fp32_h5_d40_t1_") and kernel.target == 90
    assert kernel.shared_bytes <= plugin_logic.SHARED_MEMORY_LIMIT
    entry = re.search(rf"\.entry {kernel.name}\(([^)]*)\)", kernel.ptx).group(1)
    assert entry.count(".param") == plugin_logic.KERNEL_PARAMS and ".target sm_90" in kernel.ptx
    assert re.search(r"ld\.global[^\n]*\.v4", kernel.ptx)  # finding 14: aligned, vectorised loads
    assert compile_attention("fp32", 5, 200, 40 ** -0.5, 0, 90).name.startswith("paca_attn_fp32_h5_d40_t2_")
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    (tmp_path / "k.ptx").write_text(kernel.ptx)
    result = subprocess.run([ptxas, "-arch=sm_90a", str(tmp_path / "k.ptx"), "-o", str(tmp_path / "k.cubin")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "k.cubin").stat().st_size > 0


def test_strip_unused_params_refuses_used_ones():
    ptx = ".entry k(\n\t.param .u64 k_param_0,\n\t.param .u64 k_param_1\n)\n{ ld.param.u64 %rd1, [k_param_1]; }"
    with pytest.raises(ValueError, match="uses its parameter k_param_1"):
        plugin_logic.strip_unused_params(ptx, "k", 1)
    assert plugin_logic.strip_unused_params(ptx, "k", 2).count(".param .u64") == 2
    with pytest.raises(ValueError, match=r"no \.entry"):
        plugin_logic.strip_unused_params(ptx, "other", 1)


# ------------------------------------------------------------------------ builder against a fake TRT

class FakeTensorRT(SimpleNamespace):
    """TEST DOUBLE of the `tensorrt` module: records the calls our builder makes. Not TensorRT."""

    def __init__(self, version: str = "10.13.3.9", parse_ok: bool = True, build_ok: bool = True):
        calls: list[tuple] = []
        self.calls = calls
        trt = self

        class Logger:
            WARNING = "warning"

            def __init__(self, level):
                calls.append(("Logger", level))

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                calls.append(("set_shape", name, lo, opt, hi))

        class TimingCache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return b"timing:" + self.data

        class Config:
            builder_optimization_level = None

            def set_memory_pool_limit(self, pool, size):
                calls.append(("pool", pool, size))

            def set_flag(self, flag):
                calls.append(("flag", flag))

            def clear_flag(self, flag):
                calls.append(("clear_flag", flag))

            def add_optimization_profile(self, profile):
                calls.append(("add_profile",))

            def create_timing_cache(self, data):
                return TimingCache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                calls.append(("set_timing_cache", cache.data, ignore_mismatch))

            def get_timing_cache(self):
                return self.cache

        class Parser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                trt.parsed_path = path
                trt.parsed = onnx.load(path)
                return parse_ok

            def get_error(self, i):
                return "In node 3 (PaCaAttention): Plugin not found"

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                calls.append(("create_network", flags))
                return object()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"PLAN" if build_ok else None

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                calls.append(("deserialize", data))
                return SimpleNamespace(plan=data)

        super().__init__(
            __version__=version, Logger=Logger, Builder=Builder, OnnxParser=Parser, Runtime=Runtime,
            MemoryPoolType=SimpleNamespace(WORKSPACE="workspace"),
            BuilderFlag=SimpleNamespace(TF32="tf32"),
            NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1, PREFER_AOT_PYTHON_PLUGINS=5),
            calls=calls,
        )


@pytest.fixture
def artifact(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(attention_artifact(), str(path))
    return path


@pytest.mark.parametrize("version", ["10.13.3.9", "11.4.0.106"])
def test_builder_fp16_is_strongly_typed_with_graph_casts(artifact, tmp_path, version):
    """Finding 8: no weak-typing flags on any version; the fp16 graph (casts in it) is what gets parsed."""
    fake = FakeTensorRT(version)
    registered = []
    profile = ShapeProfile((1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))
    engine = tmp_path / "out" / "model.plan"
    manifest = build_engine(artifact, engine, profile, precision="fp16", timing_cache=tmp_path / "t.cache",
                            workspace_mib=512, trt=fake, machine=H100, plugin_registrar=lambda: registered.append(1))
    assert registered == [1]
    assert ("set_shape", "pixel_values", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32)) in fake.calls
    assert not [c for c in fake.calls if c[0] == "flag"]  # no FP16 / OBEY_PRECISION_CONSTRAINTS
    assert ("clear_flag", "tf32") in fake.calls  # finding 9
    assert ("pool", "workspace", 512 << 20) in fake.calls
    assert ("create_network", 1 << 1 | 1 << 5) in fake.calls  # strongly typed, AOT plugins preferred
    assert fake.parsed.graph.initializer[0].data_type == TensorProto.FLOAT16  # precision from graph casts
    assert fake.parsed_path != str(artifact)
    assert engine.read_bytes() == b"PLAN"
    assert (tmp_path / "t.cache").read_bytes() == b"timing:"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "out", "t.cache"]  # no temp files
    assert read_manifest(engine) == manifest and manifest_path(engine).is_file()
    assert manifest.onnx_sha256 == file_sha256(artifact) and manifest.precision == "fp16"
    assert (manifest.arch, manifest.compute_capability) == ("demo_digits_cls", "9.0")


def test_builder_fp32_parses_the_artifact_file_itself(artifact, tmp_path):
    """Finding 14: parse_from_file on the artifact (external weights, no 2 GB protobuf limit)."""
    fake = FakeTensorRT("11.4.0.106")
    profile = ShapeProfile((1, 3, 32, 32), (1, 3, 32, 32), (1, 3, 32, 32))
    build_engine(artifact, tmp_path / "m.plan", profile, timing_cache=tmp_path / "t.cache", trt=fake,
                 machine=MachineInfo("11.4.0.106", "NVIDIA H200", "9.0"), plugin_registrar=lambda: None)
    assert fake.parsed_path == str(artifact)
    assert fake.parsed.graph.initializer[0].data_type == TensorProto.FLOAT
    assert ("clear_flag", "tf32") in fake.calls


def test_fp16_graph_of_a_paca_model_keeps_softmax_and_norms_in_fp32(artifacts_dir):
    """Finding 8, on the real exported PaCa classifier: cluster softmaxes, LayerNorms and the mean pool
    read fp32 tensors (behind Casts); the attention plugin runs in fp16."""
    half = fp16_graph(onnx.load(str(artifacts_dir / "classifier.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in half.graph.value_info}
    producer = {out: node for node in half.graph.node for out in node.output}
    checked = {}
    for node in half.graph.node:
        if node.op_type in ("Softmax", "LayerNormalization", "ReduceMean"):
            assert types.get(node.input[0]) == TensorProto.FLOAT, (node.name, node.op_type)
            checked[node.op_type] = checked.get(node.op_type, 0) + 1
        if node.op_type == "Softmax":
            cast = producer[node.input[0]]
            assert cast.op_type == "Cast" and cast.attribute[0].i == TensorProto.FLOAT
        if node.op_type == OP_NAME:
            assert {types.get(name) for name in (*node.input, *node.output)} == {TensorProto.FLOAT16}
    assert checked["Softmax"] >= 3 and checked["LayerNormalization"] > 0 and checked["ReduceMean"] == 1


def test_builder_refuses_old_tensorrt_and_detection(artifact, tmp_path):
    """Findings 10 and 13: clear messages before anything is built."""
    profile = default_profile("classification", IMAGENET_CLASSIFICATION)
    with pytest.raises(UnsupportedTensorRTError, match=r"TensorRT 10\.8\.0\.43 is too old"):
        build_engine(artifact, tmp_path / "m.plan", profile, trt=FakeTensorRT("10.8.0.43"), machine=H100,
                     plugin_registrar=lambda: None)
    model = onnx.load(str(artifact))
    write_metadata(model, ArtifactMetadata("demo_digits_det", "detection", COCO_DETECTION, "digits10",
                                           tuple(str(i) for i in range(10)), ("boxes",)).to_props())
    detector = tmp_path / "det.onnx"
    onnx.save(model, str(detector))
    with pytest.raises(EngineBuildError, match=r"data-dependent length.*onnxruntime backend"):
        build_engine(detector, tmp_path / "d.plan", profile, trt=FakeTensorRT(), machine=H100,
                     plugin_registrar=lambda: None)
    assert not (tmp_path / "d.plan").exists()


def test_builder_reports_parser_and_build_failures(artifact, tmp_path):
    profile = default_profile("classification", IMAGENET_CLASSIFICATION)
    with pytest.raises(EngineBuildError, match="Plugin not found"):
        build_engine(artifact, tmp_path / "m.plan", profile, trt=FakeTensorRT(parse_ok=False), machine=H100,
                     timing_cache=tmp_path / "t", plugin_registrar=lambda: None)
    with pytest.raises(EngineBuildError, match="failed to build"):
        build_engine(artifact, tmp_path / "m.plan", profile, trt=FakeTensorRT(build_ok=False), machine=H100,
                     timing_cache=tmp_path / "t", plugin_registrar=lambda: None)
    assert not (tmp_path / "m.plan").exists()


def test_runtime_checks_manifest_before_deserialising_and_needs_no_plugin(artifact, tmp_path):
    """Finding 1: loading an AOT engine neither imports the plugin module nor Triton."""
    import sys

    engine = tmp_path / "m.plan"
    fake = FakeTensorRT()
    build_engine(artifact, engine, default_profile("classification", IMAGENET_CLASSIFICATION), trt=fake,
                 machine=H100, timing_cache=tmp_path / "t", plugin_registrar=lambda: None)
    a100 = MachineInfo("10.13.3.9", "NVIDIA A100", "8.0")
    with pytest.raises(EngineMismatchError, match="compute capability"):
        load_engine(engine, trt=fake, machine=a100)
    assert not [c for c in fake.calls if c[0] == "deserialize"]
    loaded = load_engine(engine, trt=fake, machine=H100, onnx_path=artifact)
    assert loaded.plan == b"PLAN"
    assert "export.tensorrt.plugin" not in sys.modules


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_cli_build_engine_without_tensorrt_says_so(artifact, tmp_path):
    from typer.testing import CliRunner

    from service.cli import app

    result = CliRunner().invoke(app, ["build-engine", str(artifact), "-o", str(tmp_path / "m.plan")])
    assert result.exit_code == 2
    assert "TensorRT is not importable" in result.output


# ----------------------------------------------------------------------------------------------- CLI

def test_cli_build_engine_prints_trtexec_lines(artifact, tmp_path):
    from typer.testing import CliRunner

    from service.cli import app

    base = ["build-engine", str(artifact), "--output", str(tmp_path / "m.plan"), "--max-batch", "16",
            "--opt-batch", "4", "--print-trtexec"]
    result = CliRunner().invoke(app, [*base, "--precision", "fp16", "--trt-major", "10"])
    assert result.exit_code == 0, result.output
    cast, trtexec = result.output.strip().splitlines()
    assert cast.startswith("python -m export.tensorrt.precision ") and cast.endswith("model.fp16.onnx")
    assert "--onnx=" in trtexec and "model.fp16.onnx" in trtexec
    assert "--minShapes=pixel_values:1x3x224x224" in trtexec and "--optShapes=pixel_values:4x3x224x224" in trtexec
    assert "--maxShapes=pixel_values:16x3x224x224" in trtexec and "--stronglyTyped" in trtexec
    assert "--fp16" not in trtexec and "--noTF32" in trtexec
    eleven = CliRunner().invoke(app, [*base, "--trt-major", "11"])
    assert eleven.exit_code == 0 and "--stronglyTyped" not in eleven.output and "precision" not in eleven.output
    from export.tensorrt.trtexec import installed_major

    if installed_major() is None:  # finding 12: flags of the installed major, else of the latest, said so
        guessed = CliRunner().invoke(app, base)
        assert guessed.output.startswith("# TensorRT is not installed here: flags for TensorRT 11")


def test_cli_build_engine_errors(artifact, tmp_path):
    from typer.testing import CliRunner

    from service.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["build-engine", str(artifact), "-o", str(tmp_path / "m.plan"), "--precision", "int4"])
    assert bad.exit_code == 2 and "unknown precision" in bad.output
    fixed = runner.invoke(app, ["build-engine", str(artifact), "-o", str(tmp_path / "m.plan"), "--max-hw", "512x512"])
    assert fixed.exit_code == 2 and "fixed input size" in fixed.output
    plain = tmp_path / "plain.onnx"
    model = attention_artifact()
    del model.metadata_props[:]
    onnx.save(model, str(plain))
    not_paca = runner.invoke(app, ["build-engine", str(plain), "-o", str(tmp_path / "m.plan")])
    assert not_paca.exit_code == 2 and "not a PaCa artifact" in not_paca.output
