"""Checkpoint loading: every wrapper/prefix form the official code produces, dtype casting, strictness,
and the restricted unpickler. Files are real `.pth` / `.safetensors` files written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import models
from models.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load_checkpoint,
    read_checkpoint_file,
    to_arch_layout,
)
from models.config import PaCaConfig
from models.paca_vit import PaCaViT
from models.registry import ArchSpec

ARCH = "pacavit_tiny_p2cconv_100_0"


@pytest.fixture(scope="module")
def golden(golden_reference_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(golden_reference_dir / f"golden_{ARCH}.safetensors"))


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    return models.get_arch(ARCH).factory().eval()


def blanked(model: torch.nn.Module) -> torch.nn.Module:
    """Zero every weight, so a successful load is visible in the values."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.zero_()
    return model


def assert_holds(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for key, tensor in expected.items():
        assert state[key].dtype == torch.float32
        torch.testing.assert_close(state[key], tensor.float(), atol=0, rtol=0, msg=key)


def save_pth(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("form", ["bare", "model", "state_dict", "state_dict_ema", "module_prefix", "mmengine"])
def test_official_wrappers_load(tmp_path: Path, golden, tiny_model, form: str) -> None:
    prefixed = {f"module.{key}": value for key, value in golden.items()}
    payload = {
        "bare": golden,
        "model": {"model": golden, "epoch": 299},
        "state_dict": {"state_dict": golden, "optimizer": {"lr": 0.001}},
        "state_dict_ema": {"state_dict_ema": golden},
        "module_prefix": {"model": prefixed},
        "mmengine": {"meta": {"mmengine_version": "0.10.7", "epoch": 12}, "state_dict": prefixed},
    }[form]
    path = save_pth(tmp_path / "ckpt.pth", payload)
    load_checkpoint(blanked(tiny_model), path, models.get_arch(ARCH))
    assert_holds(tiny_model, golden)


def test_build_loads_safetensors_in_eval_mode(golden_reference_dir: Path, golden) -> None:
    model = models.build(ARCH, golden_reference_dir / f"golden_{ARCH}.safetensors")
    assert not model.training
    assert_holds(model, golden)


def test_float16_file_is_cast_to_model_dtype(tmp_path: Path, golden, tiny_model) -> None:
    half = {key: value.half() for key, value in golden.items()}
    save_file(half, str(tmp_path / "half.safetensors"))
    load_checkpoint(blanked(tiny_model), tmp_path / "half.safetensors", models.get_arch(ARCH))
    assert_holds(tiny_model, half)


def test_build_in_float64_matches_float32_logits(golden_reference_dir: Path) -> None:
    """dtype= casts the float32 file up; the float64 forward is an independent check of the float32 one."""
    path = golden_reference_dir / f"golden_{ARCH}.safetensors"
    io = load_file(str(golden_reference_dir / f"golden_{ARCH}_io.safetensors"))
    model = models.build(ARCH, path, dtype=torch.float64)
    assert next(model.parameters()).dtype == torch.float64
    with torch.no_grad():
        logits = model(io["input"][:1].double())  # one image: float64 convolutions are slow on CPU
    torch.testing.assert_close(logits.float(), io["logits"][:1], atol=1e-6, rtol=0)


def test_integer_buffers_keep_their_dtype(tmp_path: Path) -> None:
    """ConvMixer teachers have BatchNorm `num_batches_tracked` (int64) next to float buffers."""
    config = PaCaConfig((8, 16, 24, 32), (1, 1, 1, 1), num_heads=(1, 2, 4, 8), clusters=(4, 4, 4, 4),
                        teacher_depths=(1, 1, 1, 1), num_classes=3)
    source = PaCaViT(config).state_dict()
    half = {key: (value.half() if value.is_floating_point() else value + 7) for key, value in source.items()}
    save_pth(tmp_path / "teacher.pth", {"state_dict": half})
    spec = ArchSpec("tiny_teacher", "classification", lambda: PaCaViT(config), models.get_arch(ARCH).preprocess,
                    "imagenet1k")
    model = load_checkpoint(PaCaViT(config), tmp_path / "teacher.pth", spec)
    counter = model.state_dict()["paca_teacher.block1.0.3.num_batches_tracked"]
    assert counter.dtype == torch.int64 and counter.item() == 7
    assert model.state_dict()["paca_teacher.block1.0.3.running_var"].dtype == torch.float32


def test_downstream_checkpoint_for_classifier_says_backbone_only(tmp_path: Path, golden) -> None:
    backbone = {f"backbone.{key}": value for key, value in golden.items() if not key.startswith("head.")}
    neck = {"neck.lateral_convs.0.conv.weight": torch.zeros(256, 96, 1, 1)}
    path = save_pth(tmp_path / "mask_rcnn.pth", {"meta": {}, "state_dict": {**backbone, **neck}})
    with pytest.raises(CheckpointError, match=r"backbone.*no classifier `head\.\*`"):
        models.build(ARCH, path)


def test_backbone_prefixed_classifier_loads(tmp_path: Path, golden, tiny_model) -> None:
    path = save_pth(tmp_path / "wrapped.pth", {f"backbone.{key}": value for key, value in golden.items()})
    load_checkpoint(blanked(tiny_model), path, models.get_arch(ARCH))
    assert_holds(tiny_model, golden)


def test_missing_unexpected_and_mismatched_keys_are_all_listed(tmp_path: Path, golden) -> None:
    broken = dict(golden)
    del broken["head.bias"], broken["stage1.0.attn.q.weight"]
    broken["stage9.extra.weight"] = torch.zeros(3)
    broken["stage1.0.attn.clustering.clustering.4.weight"] = torch.zeros(200, 96, 1, 1)
    path = save_pth(tmp_path / "broken.pth", broken)
    with pytest.raises(CheckpointMismatchError) as info:
        models.build(ARCH, path)
    message = str(info.value)
    assert "2 missing key(s): stage1.0.attn.q.weight, head.bias" in message
    assert "1 unexpected key(s): stage9.extra.weight" in message
    assert "stage1.0.attn.clustering.clustering.4.weight (checkpoint [200, 96, 1, 1] vs model [100, 96, 1, 1])" \
        in message
    assert "200" in message and "clusters" in message
    assert info.value.missing == ["stage1.0.attn.q.weight", "head.bias"]


def test_long_key_lists_are_truncated_with_counts(tmp_path: Path, golden) -> None:
    kept = {key: value for key, value in golden.items() if not key.startswith("stage3.")}
    save_file(kept, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointMismatchError) as info:
        models.build(ARCH, tmp_path / "partial.safetensors")
    dropped = len(golden) - len(kept)
    assert f"{dropped} missing key(s)" in str(info.value)
    assert f"({dropped - 10} more)" in str(info.value)
    assert len(info.value.missing) == dropped


class _Exploit:
    """Unpickling this would create a file: proof that arbitrary callables run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_objects_are_refused_without_running_them(tmp_path: Path, golden) -> None:
    marker = tmp_path / "was_executed"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"head.bias": golden["head.bias"]}, "hook": _Exploit(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="safetensors") as info:
        read_checkpoint_file(path)
    assert "io.open" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ([1, 2, 3], "mapping of tensors"),
        ({"state_dict": {"head.bias": "not a tensor"}}, "non-tensor"),
        ({"head.bias": torch.zeros(1000), "epoch": 3}, "non-tensor"),
    ],
)
def test_malformed_contents_are_explained(tmp_path: Path, payload: object, match: str) -> None:
    path = save_pth(tmp_path / "odd.pth", payload)
    with pytest.raises(CheckpointError, match=match):
        models.build(ARCH, path)


def test_unreadable_files_are_explained(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint_file(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_checkpoint_file(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint_file(tmp_path / "absent.pth")


def test_arch_converter_and_ignored_prefixes_apply_after_unwrapping() -> None:
    """The generic hooks the segmentation/detection archs plug into (mm layouts, UperNet auxiliary head)."""
    config = PaCaConfig((8, 16, 24, 32), (1, 1, 1, 1), num_heads=(1, 2, 4, 8), clusters=(4, 4, 4, 0), num_classes=0)
    reference = PaCaViT(config).state_dict()
    seen: list[str] = []

    def rename(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        seen.extend(state_dict)
        return {key.replace("encoder.", "body.", 1): value for key, value in state_dict.items()}

    spec = ArchSpec("toy_seg", "segmentation", lambda: PaCaViT(config), models.get_arch(ARCH).preprocess, "ade20k150",
                    convert_checkpoint=rename, ignored_checkpoint_prefixes=("auxiliary_head.",))
    raw = {"meta": {}, "state_dict": {
        **{f"module.encoder.{key}": value for key, value in reference.items()},
        "module.auxiliary_head.conv_seg.weight": torch.zeros(150, 256, 1, 1),
    }}
    converted = to_arch_layout(raw, spec)
    assert all(not key.startswith("module.") for key in seen)
    assert set(converted) == {f"body.{key}" for key in reference}


def manifest_checkpoint(manifests_dir: Path, manifest: str) -> dict[str, object]:
    """An mmengine-style checkpoint with exactly the official manifest's keys and shapes (meta tensors)."""
    import json

    entries = json.loads((manifests_dir / f"{manifest}.keys.json").read_text())["keys"]
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    state = {e["key"]: torch.empty(e["shape"], dtype=dtypes[e["dtype"]], device="meta") for e in entries}
    return {"meta": {"mmseg_version": "1.2.2"}, "state_dict": state}


@pytest.mark.parametrize(("arch", "manifest"), [
    ("upernet_pacavit_tiny_p2cconv_100_0", "segmentor_upernet_pacavit_tiny_p2cconv_100_0_ade20k"),
    ("pacahead_pacavit_tiny_p2cconv_100_0", "segmentor_pacahead_pacavit_tiny_p2cconv_100_0_ade20k"),
])
def test_official_segmentor_layouts_fit_through_the_loader(manifests_dir: Path, arch: str, manifest: str) -> None:
    """The generic pipeline on the real archs: UperNet's `auxiliary_head.*` is the only thing dropped."""
    from models.checkpoint import check_fits, expected_layout

    spec = models.get_arch(arch)
    with torch.device("meta"):
        layout = expected_layout(spec.factory())
    converted = to_arch_layout(manifest_checkpoint(manifests_dir, manifest), spec)
    check_fits(converted, layout, what=arch)
    assert list(converted) == list(layout)


def test_detector_checkpoint_into_classifier_names_the_problem(manifests_dir: Path) -> None:
    raw = manifest_checkpoint(manifests_dir, "mask_rcnn_pacavit_tiny_p2cconv_100_0_coco")
    with pytest.raises(CheckpointError, match=r"downstream .* checkpoint.*237 `backbone"):
        to_arch_layout(raw, models.get_arch(ARCH))
