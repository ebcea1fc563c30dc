"""Every classification arch has exactly the official state_dict: keys in order, shapes, kinds, sizes.

Models are built on the meta device: shapes without allocating or initialising any weight.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import models
from models.variants import CLASSIFICATION_VARIANTS

ARCHS = sorted(CLASSIFICATION_VARIANTS)


def test_all_thirteen_official_variants_are_registered() -> None:
    assert len(ARCHS) == 13
    assert set(ARCHS) <= set(models.list_archs("classification"))


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_matches_official_manifest(manifests_dir: Path, arch: str) -> None:
    manifest = json.loads((manifests_dir / f"{arch}.keys.json").read_text())
    with torch.device("meta"):
        model = models.get_arch(arch).factory()
    state = model.state_dict()
    parameter_names = {name for name, _ in model.named_parameters()}

    assert list(state) == [entry["key"] for entry in manifest["keys"]]
    for entry in manifest["keys"]:
        tensor = state[entry["key"]]
        assert list(tensor.shape) == entry["shape"], entry["key"]
        assert str(tensor.dtype).removeprefix("torch.") == entry["dtype"], entry["key"]
        assert ("parameter" if entry["key"] in parameter_names else "buffer") == entry["kind"], entry["key"]
    assert len(state) == manifest["num_state_dict_entries"]
    assert sum(p.numel() for p in model.parameters()) == manifest["param_count"]
    assert sum(t.numel() for t in state.values()) == manifest["state_dict_numel_incl_buffers"]

    with torch.no_grad():
        logits = model.eval()(torch.empty(1, 3, 224, 224, device="meta"))
    assert list(logits.shape) == manifest["output_shape_for_1x3x224x224"]


@pytest.mark.parametrize("arch", ["pacavit_tiny_p2cconv_100_0", "pacavit_convmixer_tiny_100"])
def test_backbone_returns_four_stage_features(arch: str) -> None:
    """num_classes=0 turns a variant into the downstream backbone: BCHW at strides 4/8/16/32 (⌈x/2⌉ each)."""
    from dataclasses import replace

    from models.paca_vit import PaCaViT

    config = replace(CLASSIFICATION_VARIANTS[arch], num_classes=0)
    with torch.device("meta"):
        backbone = PaCaViT(config)
        features = backbone(torch.empty(1, 3, 200, 150))
    assert not any(key.startswith("head.") for key in backbone.state_dict())
    expected = [(50, 38), (25, 19), (13, 10), (7, 5)]
    assert [tuple(f.shape) for f in features] == [
        (1, dim, h, w) for dim, (h, w) in zip(config.embed_dims, expected, strict=True)
    ]
