"""The project's QDP plugin through TensorRT's REAL Python plugin layer (`tensorrt.plugin` from the pinned
`tensorrt-cu13-bindings` wheel), on top of the labelled stand-in for TensorRT's C extension.

What is real here: TensorRT's decorators and validators, TensorDesc/ShapeExpr/SymInt32, AutoTuneCombination,
KernelLaunchParams, the plugin creator and the `_TemplateAOTPlugin` methods TensorRT's builder calls, and
the Triton compile of every kernel (ptxas assembles the PTX). What is a double: the C++ side that calls those
methods (`TensorRTBuilderDouble`) and the expression builder. Nothing launches a kernel.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import types
from pathlib import Path

import pytest

from export.op_spec import OP_NAME, PLUGIN_NAMESPACE, op_attributes
from export.tensorrt import plugin_logic
from export.tensorrt.aot_kernel import compile_attention
from export.tensorrt.versions import UnsupportedTensorRTError
from models.variants import CLASSIFICATION_VARIANTS
from tests.support import tensorrt_plugin_layer as layer
from tests.support.paths import REPO_ROOT
from tests.support.tensorrt_standin import IExprBuilder, TensorRTBuilderDouble

PLUGIN_SOURCE = (REPO_ROOT / "export" / "tensorrt" / "plugin.py").read_text()
SM = 90


def tiny_stages(image: int = 224) -> list[dict[str, int]]:
    """The attention cores of PaCa-Tiny at `image`²: N patches, M clusters (N in the last stage)."""
    config = CLASSIFICATION_VARIANTS["pacavit_tiny_p2cconv_100_0"]
    stages = []
    for i in range(4):
        n = math.ceil(image / 4 / 2**i) ** 2
        stages.append({"heads": config.num_heads[i], "channels": config.embed_dims[i], "n": n,
                       "m": config.clusters[i] or n})
    return stages


def exec_plugin_variant(source: str) -> types.ModuleType:
    """Run a variant of export/tensorrt/plugin.py (inside `layer.loaded()`); returns the module."""
    module = types.ModuleType("plugin_variant")
    exec(compile(source, "plugin_variant.py", "exec", dont_inherit=True), module.__dict__)
    return module


@pytest.fixture
def real_layer(monkeypatch):
    with layer.loaded("11.4.0.106") as trt:
        import export.tensorrt.plugin as plugin

        monkeypatch.setattr(plugin, "target_capability", lambda: SM)
        yield trt, plugin


# ------------------------------------------------------------------------------ the validators (1, 2)

def test_real_validators_reject_string_annotations():
    """Finding 1: with `from __future__ import annotations` the real register() sees strings and refuses."""
    with layer.loaded(), pytest.raises(ValueError, match="TensorDescs args should come first"):
        exec_plugin_variant("from __future__ import annotations\n" + PLUGIN_SOURCE)
    assert not re.search(r"^from __future__ import annotations", PLUGIN_SOURCE, re.MULTILINE)


def test_real_validators_require_the_aot_return_annotation():
    """Finding 2: aot_impl without `-> tuple[str | bytes, str | bytes, KernelLaunchParams, SymIntExprs]`."""
    source, count = re.subn(r"\n\s*\) -> tuple\[str \| bytes, str \| bytes, trtp\.KernelLaunchParams, "
                            r"trtp\.SymIntExprs\]:", "):", PLUGIN_SOURCE)
    assert count == 1
    with layer.loaded(), pytest.raises(ValueError, match="No return annotation found for aot_impl"):
        exec_plugin_variant(source)


def test_plugin_registers_through_the_real_decorators(real_layer):
    trt, _plugin = real_layer
    from tensorrt.plugin import _lib

    definition = _lib.QDP_REGISTRY[plugin_logic.PLUGIN_ID]
    assert definition.input_tensor_names == ["q", "k", "v"]
    assert definition.input_attrs == {"num_heads": int, "scale": float}
    assert definition.num_outputs == 1
    assert definition.aot_impl_func is not None and definition.impl_func is None  # AOT only
    assert definition.autotune_attr_names == ["num_heads", "scale"]
    creator = trt.get_plugin_registry().get_creator(OP_NAME, "1", PLUGIN_NAMESPACE)
    assert [f.name for f in creator.field_names] == ["num_heads", "scale"]
    builder = TensorRTBuilderDouble(trt)
    with pytest.raises(ValueError, match="JIT implementation requested, but not defined"):
        builder.create(OP_NAME, PLUGIN_NAMESPACE, op_attributes(2, 0.25), trt.QuickPluginCreationRequest.STRICT_JIT)


@pytest.mark.parametrize("version", ["10.8.0.43", "10.6.0.26"])
def test_plugin_refuses_tensorrt_without_aot_plugins(version):
    """Finding 10: aot_impl exists from 10.9; older TensorRT gets a clear message at import."""
    with layer.loaded(version), pytest.raises(UnsupportedTensorRTError, match=r"needs TensorRT >= 10\.9"):
        import export.tensorrt.plugin  # noqa: F401


# ------------------------------------------------------------------------- ShapeExpr semantics (3)

def test_static_channels_reads_real_shape_exprs(real_layer):
    """Finding 3: `constant_value` is a method of the real ShapeExpr; fake and symbolic dims are refused."""
    from tensorrt.plugin import ShapeExpr
    from tensorrt.plugin._tensor import SymIntExpr

    builder = IExprBuilder()
    SymIntExpr._exprBuilder = builder
    try:
        constant, symbolic = ShapeExpr(builder.constant(96)), ShapeExpr(builder.symbol("N"))
        assert callable(constant.constant_value)  # the bug read it as a property
        assert plugin_logic.static_channels(constant) == 96
        with pytest.raises(ValueError, match="static channel"):
            plugin_logic.static_channels(symbolic)
    finally:
        SymIntExpr._exprBuilder = None
    with pytest.raises(ValueError, match="fake shape expression"):
        plugin_logic.static_channels(ShapeExpr())
    assert plugin_logic.static_channels(64) == 64


# --------------------------------------------------------------- a whole AOT build, as TensorRT calls it

def build_stage(trt, stage: dict[str, int], io_type, batch_range=(1, 8, 32)):
    builder = TensorRTBuilderDouble(trt)
    plugin = builder.create(OP_NAME, PLUGIN_NAMESPACE, op_attributes(stage["heads"],
                                                                      (stage["channels"] // stage["heads"]) ** -0.5))
    assert type(plugin).__name__ == "_TemplateAOTPlugin"
    c = stage["channels"]
    ranges = {"B": batch_range, "N": (stage["n"],) * 3, "M": (stage["m"],) * 3}
    builds = builder.build(plugin, [("B", "N", c), ("B", "M", c), ("B", "M", c)], io_type, ranges)
    assert [tuple(map(repr, shape)) for shape in builder.output_shapes] == [("B", "N", str(c))]
    return builds


def ptx_entry(ptx: str) -> tuple[str, list[str]]:
    match = re.search(r"\.entry (\w+)\(([^)]*)\)", ptx)
    return match.group(1), [p.split()[1] for p in match.group(2).split(",")]


@pytest.mark.slow
@pytest.mark.parametrize("element", ["fp32", "fp16"])
def test_aot_build_of_paca_tiny_on_tensorrt_11(real_layer, element, tmp_path):
    """Every PaCa-Tiny stage at 224², batch 1..32: what TensorRT 11.4 receives per advertised tactic."""
    trt, _plugin = real_layer
    io_type = trt.DataType.FLOAT if element == "fp32" else trt.DataType.HALF
    names = set()
    for stage in tiny_stages():
        head_dim = stage["channels"] // stage["heads"]
        builds = build_stage(trt, stage, io_type)
        tactics = [b.tactic for b in builds]
        needs = {t: compile_attention(element, stage["heads"], stage["channels"], head_dim ** -0.5, t, SM).shared_bytes
                 for t in plugin_logic.tactic_ids()}
        # Finding 5: exactly the tactics whose kernel fits 48 KiB are offered (fp32 tiles 3/4 need 64/96 KiB).
        assert tactics == [t for t, b in needs.items() if b <= 48 * 1024] and tactics
        if element == "fp32" and head_dim >= 40:
            assert 3 not in tactics and 4 not in tactics
        bindings = {"B": 8, "N": stage["n"], "M": stage["m"]}
        for build in builds:
            config = plugin_logic.config_for_tactic(build.tactic)
            name = build.kernel_name.decode()
            entry, params = ptx_entry(build.ptx.decode())
            assert entry == name and name not in names  # finding 7: one entry name per specialisation
            names.add(name)
            assert f"_{element}_h{stage['heads']}_d{head_dim}_t{build.tactic}_" in name
            assert params == [".u64", ".u64", ".u64", ".u32", ".u32", ".u64"]  # q, k, v, N, M, out
            assert f".target sm_{SM}" in build.ptx.decode() and b"paca_attention_kernel" not in build.ptx
            assert build.grid(bindings) == (math.ceil(stage["n"] / config.block_n), 8 * stage["heads"], 1)
            assert build.block(bindings) == (config.num_warps * 32, 1, 1)
            assert build.launch["shared_mem"].get_constant_value() == needs[build.tactic]
            assert [d.name for d, _ in build.extra_args] == ["INT32", "INT32"]
            assert build.scalars(bindings) == [stage["n"], stage["m"]]
            assert all(t == io_type for t in build.io_types)
        assert_ptxas_accepts(builds[0].ptx, tmp_path / builds[0].kernel_name.decode())


def test_aot_build_on_tensorrt_10_uses_the_single_default_tactic(monkeypatch):
    """Finding 10: before 11.1 no custom tactic is advertised; TensorRT's tactic 0 → the default tile."""
    with layer.loaded("10.13.3.9") as trt:
        import export.tensorrt.plugin as plugin

        monkeypatch.setattr(plugin, "target_capability", lambda: 80)
        stage = tiny_stages(64)[2]
        builds = build_stage(trt, stage, trt.DataType.FLOAT, batch_range=(1, 4, 8))
    assert [b.tactic for b in builds] == [0]
    default = plugin_logic.config_for_tactic(plugin_logic.DEFAULT_TACTIC)
    assert f"_t{plugin_logic.DEFAULT_TACTIC}_" in builds[0].kernel_name.decode()
    assert ".target sm_80" in builds[0].ptx.decode()
    assert builds[0].grid({"B": 3, "N": stage["n"], "M": stage["m"]}) == (
        math.ceil(stage["n"] / default.block_n), 3 * stage["heads"], 1)


def assert_ptxas_accepts(ptx: bytes, stem: Path) -> None:
    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".ptx").write_bytes(ptx)
    result = subprocess.run([ptxas, f"-arch=sm_{SM}a", str(stem.with_suffix(".ptx")), "-o",
                             str(stem.with_suffix(".cubin"))], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
