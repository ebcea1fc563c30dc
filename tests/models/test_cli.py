"""`paca models list|info|convert` through the real root CLI app."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from service.cli import app

ARCH = "pacavit_tiny_p2cconv_100_0"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), terminal_width=200)


def test_list_classification_shows_every_variant_with_size_and_file() -> None:
    result = invoke("models", "list", "--task", "classification")
    assert result.exit_code == 0, result.output
    expected = [(ARCH, "12.20"), ("pacavit_base_p2cconv_100_0", "46.91"), ("pacavit_convmixer_base_100", "47.66")]
    for name, params in expected:
        row = next(line for line in result.output.splitlines() if f" {name} " in line)
        assert params in row and "classification" in row
    assert "IMNET_224_pacavit_small_p2cmlp_100_0.pth" in result.output
    assert "pacahead_" not in result.output


def test_list_rejects_unknown_task() -> None:
    result = invoke("models", "list", "--task", "captioning")
    assert result.exit_code == 2
    assert "unknown task 'captioning'" in result.output


def test_info_describes_one_arch() -> None:
    result = invoke("models", "info", ARCH)
    assert result.exit_code == 0, result.output
    for text in ("12,200,680", "imagenet1k", "short_side_center_crop", "IMNET_224_pacavit_tiny_p2cconv_100_0.pth"):
        assert text in result.output


def test_info_unknown_arch_is_a_usage_error() -> None:
    result = invoke("models", "info", "pacavit_huge")
    assert result.exit_code == 2
    assert "unknown arch 'pacavit_huge'" in result.output


def test_convert_wrapped_pth_to_safetensors(tmp_path: Path, golden_reference_dir: Path) -> None:
    golden = load_file(str(golden_reference_dir / f"golden_{ARCH}.safetensors"))
    source = tmp_path / "IMNET_224_tiny.pth"
    torch.save({"meta": {"epoch": 300}, "state_dict": {f"module.{k}": v.half() for k, v in golden.items()}}, source)
    target = tmp_path / "out" / "tiny.safetensors"

    result = invoke("models", "convert", str(source), str(target), "--arch", ARCH)
    assert result.exit_code == 0, result.output
    assert "239 tensors" in result.output
    converted = load_file(str(target))
    assert converted.keys() == golden.keys()
    for key, value in golden.items():
        assert converted[key].dtype == torch.float16  # the source dtype is kept
        torch.testing.assert_close(converted[key], value.half(), atol=0, rtol=0)
    with safe_open(str(target), "pt") as handle:
        assert handle.metadata()["paca.arch"] == ARCH


def test_convert_refuses_a_checkpoint_of_another_arch(tmp_path: Path, golden_reference_dir: Path) -> None:
    source = golden_reference_dir / f"golden_{ARCH}.safetensors"
    result = invoke("models", "convert", str(source), str(tmp_path / "x.safetensors"), "--arch",
                    "pacavit_small_p2cconv_100_0")
    assert result.exit_code == 1
    # Same widths, deeper stages: the 417 − 239 = 178 extra entries of the Small manifest are missing.
    assert "178 missing key(s): stage1.2.norm1_before.weight" in result.output
    assert "unexpected" not in result.output and "shape mismatch" not in result.output
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize(("target", "arch", "message"), [
    ("out.pth", ARCH, "must end in .safetensors"),
    ("out.safetensors", "nope", "unknown arch 'nope'"),
])
def test_convert_usage_errors(tmp_path: Path, target: str, arch: str, message: str) -> None:
    result = invoke("models", "convert", str(tmp_path / "in.pth"), str(tmp_path / target), "--arch", arch)
    assert result.exit_code == 2
    assert message in result.output
