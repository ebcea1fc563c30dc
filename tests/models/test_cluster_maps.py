"""`models.cluster_maps`: per-stage cluster assignments (B, M_i, H_i, W_i), each a distribution over the
stage's patch grid. The golden stage-1 map is checked in test_models_golden.py."""

from __future__ import annotations

import pytest
import torch

import models
from models.config import PaCaConfig
from models.paca_vit import PaCaViT

DIMS = (16, 32, 48, 64)
HEADS = (1, 2, 4, 8)
# Small stand-ins for each clustering placement of the official variants (same code paths).
CONFIGS = {
    "default (stages 1-3)": PaCaConfig(DIMS, (2, 1, 2, 1), HEADS, clusters=(10, 10, 10, 0), num_classes=7),
    "all stages": PaCaConfig(DIMS, (1, 1, 1, 1), HEADS, clusters=(9, 8, 7, 6), num_classes=7),
    "mlp clustering": PaCaConfig(DIMS, (1, 1, 1, 1), HEADS, clusters=(5, 5, 5, 0), clustering="mlp", num_classes=7),
    "block-wise": PaCaConfig(DIMS, (2, 2, 2, 2), HEADS, clusters=(4, 4, 4, 4), onsite_clustering=1, num_classes=7),
    "convmixer teacher": PaCaConfig(DIMS, (1, 1, 1, 1), HEADS, clusters=(6, 6, 6, 6), teacher_depths=(1, 1, 1, 1),
                                    num_classes=7),
    "backbone (num_classes=0)": PaCaConfig(DIMS, (1, 1, 1, 1), HEADS, clusters=(3, 3, 3, 0), num_classes=0),
}
# 70×50 input: stride-2 convs give ⌈x/2⌉ → 18×13, 9×7, 5×4, 3×2.
GRIDS = [(18, 13), (9, 7), (5, 4), (3, 2)]


def check_maps(maps: list[torch.Tensor | None], clusters: tuple[int, ...], batch: int) -> None:
    assert len(maps) == 4
    for stage, (z, m, (h, w)) in enumerate(zip(maps, clusters, GRIDS, strict=True), start=1):
        if m == 0:
            assert z is None, f"stage {stage} has no clustering"
            continue
        assert z is not None and z.shape == (batch, m, h, w), f"stage {stage}"
        assert bool((z >= 0).all())
        torch.testing.assert_close(z.sum(dim=(2, 3)), torch.ones(batch, m), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cluster_maps_shapes_and_normalisation(name: str) -> None:
    torch.manual_seed(0)
    config = CONFIGS[name]
    model = PaCaViT(config).eval()
    x = torch.randn(2, 3, 70, 50)
    output, maps = models.cluster_maps(model, x)
    check_maps(maps, config.clusters, batch=2)
    with torch.no_grad():
        plain = model(x)
    if config.num_classes:
        torch.testing.assert_close(output, plain, atol=0, rtol=0)
    else:
        assert len(output) == 4
        for got, want in zip(output, plain, strict=True):
            torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_features_with_clusters_is_one_pass_of_both() -> None:
    torch.manual_seed(0)
    config = CONFIGS["backbone (num_classes=0)"]
    model = PaCaViT(config).eval()
    x = torch.randn(1, 3, 70, 50)
    with torch.no_grad():
        features, maps = model.forward_features_with_clusters(x)
        expected = model.forward_features(x)
    for got, want in zip(features, expected, strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    check_maps(maps, config.clusters, batch=1)


def test_maps_of_one_image_do_not_depend_on_its_batch_partner() -> None:
    torch.manual_seed(0)
    model = PaCaViT(CONFIGS["default (stages 1-3)"]).eval()
    x = torch.randn(2, 3, 70, 50)
    _, batched = models.cluster_maps(model, x)
    _, single = models.cluster_maps(model, x[1:])
    for both, one in zip(batched[:3], single[:3], strict=True):
        torch.testing.assert_close(both[1:], one, atol=1e-6, rtol=1e-5)


def test_real_arch_maps_at_224() -> None:
    """The official Tiny layout: 100 clusters on 56², 28², 14² grids, none in stage 4."""
    model = models.build("pacavit_tiny_p2cconv_100_0")
    _, maps = models.cluster_maps(model, torch.randn(1, 3, 224, 224))
    assert [None if z is None else tuple(z.shape) for z in maps] == [
        (1, 100, 56, 56), (1, 100, 28, 28), (1, 100, 14, 14), None
    ]


def test_segmentation_model_exposes_backbone_maps() -> None:
    segmentation = pytest.importorskip("models.segmentation")
    backbone = CONFIGS["backbone (num_classes=0)"]
    model = segmentation.build_segmentor(backbone, "paca", num_classes=5, channels=16).eval()
    logits, maps = models.cluster_maps(model, torch.randn(1, 3, 70, 50))
    assert logits.shape == (1, 5, 18, 13)  # contract 1: logits at 1/4 of the input, not upsampled
    check_maps(maps, backbone.clusters, batch=1)


def test_non_paca_model_is_rejected() -> None:
    with pytest.raises(TypeError, match="forward_with_clusters"):
        models.cluster_maps(torch.nn.Linear(3, 3), torch.zeros(1, 3))
