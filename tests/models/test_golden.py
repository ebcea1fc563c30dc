"""Fidelity of the re-implementation against the official model's golden outputs (files in $PACA_REFERENCE_DIR).

The golden weights and outputs were produced by the official code; the noise floor between two
correct float32 implementations is below 1e-6 (meta.json `numerical_noise_reference`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import models
from models.checkpoint import load_state_dict_strict
from tests.support.paths import MANIFESTS, TEST_DATA

ARCH = "pacavit_tiny_p2cconv_100_0"
GOLDEN_WEIGHTS = f"golden_{ARCH}.safetensors"
GOLDEN_IO = f"golden_{ARCH}_io.safetensors"
# Issue 2 asks for 1e-4 absolute; logits and assignments are held much tighter than that because
# their noise floor is ~4e-7 and their values are small (z is ~3e-4 on average).
STAGE_ATOL = 1e-4
LOGITS_ATOL = 1e-5
ASSIGNMENT_ATOL = 1e-6


@pytest.fixture(scope="module")
def golden_io(golden_reference_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(golden_reference_dir / GOLDEN_IO))


@pytest.fixture(scope="module")
def golden_model(golden_reference_dir: Path) -> torch.nn.Module:
    return models.build(ARCH, golden_reference_dir / GOLDEN_WEIGHTS)


@pytest.fixture(scope="module")
def golden_run(golden_model: torch.nn.Module, golden_io: dict[str, torch.Tensor]):
    output, assignments = models.cluster_maps(golden_model, golden_io["input"])
    with torch.no_grad():
        features = golden_model.forward_features(golden_io["input"])
    return output, assignments, features


def manifest_order(arch: str = ARCH) -> list[str]:
    manifest = json.loads((MANIFESTS / f"{arch}.keys.json").read_text())
    return [entry["key"] for entry in manifest["keys"]]


def perturbed(state_dict: dict[str, torch.Tensor], order: list[str]) -> dict[str, torch.Tensor]:
    """The reference README's recipe: one generator seeded 2, manifest order, + 0.02·randn to every float."""
    generator = torch.Generator().manual_seed(2)
    out = {}
    for key in order:
        tensor = state_dict[key]
        if tensor.is_floating_point():
            tensor = tensor + 0.02 * torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
        out[key] = tensor
    return out


def bnc(feature: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, H·W, C), row-major patches like the golden hooks."""
    return feature.flatten(2).transpose(1, 2)


@pytest.mark.parametrize("filename", [GOLDEN_WEIGHTS, GOLDEN_IO])
def test_golden_file_is_intact(golden_reference_dir: Path, filename: str) -> None:
    meta = json.loads((TEST_DATA / f"golden_{ARCH}.meta.json").read_text())
    digest = hashlib.sha256((golden_reference_dir / filename).read_bytes()).hexdigest()
    assert digest == meta["sha256"][filename]


def test_logits_match_golden(golden_run, golden_io) -> None:
    logits = golden_run[0]
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits, golden_io["logits"], atol=LOGITS_ATOL, rtol=0)
    assert logits.argmax(dim=1).tolist() == [564, 839]


def test_first_block_assignment_matches_golden(golden_run, golden_io) -> None:
    stage1 = golden_run[1][0]
    assert stage1.shape == (2, 100, 56, 56)
    torch.testing.assert_close(stage1.flatten(2), golden_io["cluster_assignment_stage1_block0"],
                               atol=ASSIGNMENT_ATOL, rtol=1e-4)


@pytest.mark.parametrize("stage", [2, 3, 4])
def test_stage_outputs_match_golden(golden_run, golden_io, stage: int) -> None:
    torch.testing.assert_close(bnc(golden_run[2][stage - 1]), golden_io[f"stage{stage}_out_bnc"],
                               atol=STAGE_ATOL, rtol=0)


def test_perturbed_weights_match_golden(golden_reference_dir: Path, golden_io) -> None:
    """Non-zero biases and LayerNorm affine parameters: catches mapping errors the default init hides."""
    golden = load_file(str(golden_reference_dir / GOLDEN_WEIGHTS))
    model = models.get_arch(ARCH).factory().eval()
    load_state_dict_strict(model, perturbed(golden, manifest_order()))
    logits, assignments = models.cluster_maps(model, golden_io["input"])
    torch.testing.assert_close(logits, golden_io["logits_perturbed"], atol=LOGITS_ATOL, rtol=0)
    assert logits.argmax(dim=1).tolist() == [809, 268]
    torch.testing.assert_close(assignments[0].flatten(2), golden_io["cluster_assignment_stage1_block0_perturbed"],
                               atol=ASSIGNMENT_ATOL, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_golden_parity_on_cuda(golden_reference_dir: Path, golden_io) -> None:
    """The same golden data on the GPU in float32 (TF32 off, so matmuls stay IEEE float32)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = models.build(ARCH, golden_reference_dir / GOLDEN_WEIGHTS).cuda()
    logits, assignments = models.cluster_maps(model, golden_io["input"].cuda())
    torch.testing.assert_close(logits.cpu(), golden_io["logits"], atol=STAGE_ATOL, rtol=0)
    torch.testing.assert_close(assignments[0].flatten(2).cpu(), golden_io["cluster_assignment_stage1_block0"],
                               atol=ASSIGNMENT_ATOL, rtol=1e-3)
