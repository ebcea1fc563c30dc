"""Segmentation archs: key manifests (keys in order, shapes, parameter counts), output shapes, head maths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import models
from models.segmentation.archs import PACA_HEAD_BACKBONES, UPERNET_BACKBONES
from models.segmentation.paca_head import PaCaSegHead
from models.segmentation.segmentor import build_segmentor
from models.variants import CLASSIFICATION_VARIANTS


def _manifest(manifests_dir: Path, name: str) -> dict:
    return json.loads((manifests_dir / name).read_text())


def _meta_state(arch: str) -> tuple[list[tuple[str, list[int]]], int]:
    with torch.device("meta"):
        model = models.get_arch(arch).factory()
    entries = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    return entries, sum(p.numel() for p in model.parameters())


def _entries(manifest: dict, prefix: str = "", drop: tuple[str, ...] = ()) -> list[tuple[str, list[int]]]:
    return [(prefix + e["key"], e["shape"]) for e in manifest["keys"] if not e["key"].startswith(drop)]


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_pacahead_segmentor_matches_official_manifest(manifests_dir: Path, size: str) -> None:
    manifest = _manifest(manifests_dir, f"segmentor_pacahead_pacavit_{size}_p2cconv_100_0_ade20k.keys.json")
    entries, params = _meta_state(f"pacahead_pacavit_{size}_p2cconv_100_0")
    assert entries == _entries(manifest)
    assert params == manifest["param_count"]


def test_upernet_segmentor_matches_official_manifest_without_auxiliary_head(manifests_dir: Path) -> None:
    manifest = _manifest(manifests_dir, "segmentor_upernet_pacavit_tiny_p2cconv_100_0_ade20k.keys.json")
    entries, params = _meta_state("upernet_pacavit_tiny_p2cconv_100_0")
    assert entries == _entries(manifest, drop=("auxiliary_head.",))
    aux_params = sum(
        torch.Size(e["shape"]).numel() for e in manifest["keys"]
        if e["key"].startswith("auxiliary_head.") and e["kind"] == "parameter"
    )
    assert params == manifest["param_count"] - aux_params
    assert models.get_arch("upernet_pacavit_tiny_p2cconv_100_0").ignored_checkpoint_prefixes == ("auxiliary_head.",)


def _final_clustering_key(key: str) -> bool:
    """The layers whose rows are the cluster count (they get 200 rows in ADE20k backbones, `downstream_cluster_num`)."""
    return key.endswith(("clustering.clustering.4.weight", "clustering.clustering.2.weight",
                         "clustering.clustering.2.bias")) or ".to_clusters" in key


def _expected_downstream_backbone(manifests_dir: Path, backbone: str) -> list[tuple[str, list[int]]]:
    """Classification manifest minus `head.*`, final clustering layers with 200 rows, prefixed `backbone.`."""
    cls = _manifest(manifests_dir, f"{backbone}.keys.json")
    config = CLASSIFICATION_VARIANTS[backbone]
    out = []
    for e in cls["keys"]:
        if e["key"].startswith("head."):
            continue
        shape = list(e["shape"])
        mlp_hidden = config.clustering == "mlp" and e["key"].endswith("clustering.clustering.2.weight")
        if _final_clustering_key(e["key"]) and (shape[0] in (2, 49, 64, 81, 100) or mlp_hidden):
            shape[0] = 200
        out.append(("backbone." + e["key"], shape))
    return out


@pytest.mark.parametrize("backbone", sorted(PACA_HEAD_BACKBONES))
def test_every_pacahead_arch_is_downstream_backbone_plus_official_head(manifests_dir: Path, backbone: str) -> None:
    dims = CLASSIFICATION_VARIANTS[backbone].embed_dims
    head = _manifest(manifests_dir, f"paca_seghead_ade20k_in{'-'.join(map(str, dims))}.keys.json")
    entries, params = _meta_state(f"pacahead_{backbone}")
    assert entries == _expected_downstream_backbone(manifests_dir, backbone) + _entries(head, "decode_head.")
    assert params == sum(torch.Size(s).numel() for k, s in entries if not k.endswith(
        ("running_mean", "running_var", "num_batches_tracked", "blur_filter")))


@pytest.mark.parametrize("backbone", sorted(UPERNET_BACKBONES))
def test_every_upernet_arch_has_the_uperhead_layout(manifests_dir: Path, backbone: str) -> None:
    tiny = _manifest(manifests_dir, "segmentor_upernet_pacavit_tiny_p2cconv_100_0_ade20k.keys.json")
    dims = CLASSIFICATION_VARIANTS[backbone].embed_dims
    c4 = dims[-1]
    head = []
    for key, shape in _entries(tiny, drop=("backbone.", "auxiliary_head.")):
        if key.startswith("decode_head.lateral_convs.") and key.endswith("conv.weight"):
            shape = [512, dims[int(key.split(".")[2])], 1, 1]
        elif key.startswith("decode_head.psp_modules.") and key.endswith("conv.weight"):
            shape = [512, c4, 1, 1]
        elif key == "decode_head.bottleneck.conv.weight":
            shape = [512, c4 + 2048, 3, 3]
        head.append((key, shape))
    entries, _ = _meta_state(f"upernet_{backbone}")
    assert entries == _expected_downstream_backbone(manifests_dir, backbone) + head


def test_registered_segmentation_archs_carry_ade20k_data() -> None:
    spec = models.get_arch("pacahead_pacavit_small_p2cconv_2_0")
    assert spec.task == "segmentation"
    assert spec.labels == "ade20k150"
    assert spec.preprocess.resize_mode == "keep_ratio_within"
    assert spec.checkpoint_files == ("upernet_pacavit_small_p2cconv_2_0_512x512_160k_ade20k.pth",)
    assert models.get_arch("pacahead_pacavit_convmixer_base_100").checkpoint_files == (
        "pacahead_pacavit_convmixer_base_100_0_512x512_160k_ade20k.pth",)


def _randomise_batchnorm(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BN statistics and affine parameters, so a mis-wired norm cannot hide."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


@torch.no_grad()
def test_segmentor_forward_gives_quarter_resolution_logits_at_non_square_size() -> None:
    torch.manual_seed(0)
    for arch in ("pacahead_pacavit_tiny_p2cconv_100_0", "upernet_pacavit_tiny_p2cconv_100_0"):
        model = models.get_arch(arch).factory().eval()
        x = torch.randn(2, 3, 64, 96)
        logits = model(x)
        assert logits.shape == (2, 150, 16, 24)
        assert torch.isfinite(logits).all()
        out, clusters = model.forward_with_clusters(x)
        torch.testing.assert_close(out, logits)
        assert [None if c is None else tuple(c.shape) for c in clusters] == [
            (2, 200, 16, 24), (2, 200, 8, 12), (2, 200, 4, 6), None]
        torch.testing.assert_close(clusters[0].sum(dim=(2, 3)), torch.ones(2, 200))
        # Single image equals its row of the batch (no cross-talk between batch entries in eval).
        torch.testing.assert_close(model(x[1:]), logits[1:], atol=1e-5, rtol=1e-4)


def _reference_paca_head(head: PaCaSegHead, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The official PaCa head's eval forward, written with functional ops and einsums from the head's state_dict."""
    sd = {k: v.double() for k, v in head.state_dict().items() if v.is_floating_point()}

    def bn(x: torch.Tensor, p: str) -> torch.Tensor:  # channels on dim 1
        return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                            False, 0.0, 1e-5)

    def conv_module(x: torch.Tensor, p: str) -> torch.Tensor:
        return F.relu(bn(F.conv2d(x, sd[p + "conv.weight"]), p + "bn."))

    feats = [f.double() for f in features]
    h1, w1 = feats[0].shape[-2:]
    levels = [F.interpolate(conv_module(f, f"convs.{i}."), size=(h1, w1), mode="bilinear", align_corners=False)
              for i, f in enumerate(feats)]
    x = torch.cat(levels, 1)
    b = x.shape[0]
    q = conv_module(x, "q.0.").reshape(b, -1, h1 * w1)  # (B, C, N)
    logits_raw = F.conv2d(conv_module(x, "clustering.0."), sd["clustering.1.weight"], sd["clustering.1.bias"])
    z = torch.softmax(logits_raw.reshape(b, -1, h1 * w1), dim=2)  # (B, M, N)
    tokens = torch.einsum("bmn,bcn->bmc", z, x.reshape(b, -1, h1 * w1))

    def kv(p: str) -> torch.Tensor:
        y = torch.einsum("bmi,oi->bom", tokens, sd[p + "0.weight"]) + sd[p + "0.bias"][None, :, None]
        return F.relu(bn(y, p + "2."))  # (B, C, M)

    k, v = kv("k."), kv("v.")
    attn = torch.softmax(torch.einsum("bcn,bcm->bnm", q, k), dim=2)
    out = torch.einsum("bnm,bcm->bcn", attn, v).reshape(b, -1, h1, w1)
    out = conv_module(out, "proj.")
    return F.conv2d(out, sd["conv_seg.weight"], sd["conv_seg.bias"]), z.reshape(b, -1, h1, w1)


@torch.no_grad()
def test_paca_head_float32_matches_float64_functional_reference() -> None:
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    head = PaCaSegHead((96, 192, 320, 384), num_classes=150, channels=256).eval()
    _randomise_batchnorm(head, g)
    for p in head.parameters():  # non-zero biases everywhere
        p.add_(0.02 * torch.randn(p.shape, generator=g))
    sizes = [(12, 20), (6, 10), (3, 5), (2, 3)]
    features = [torch.randn(2, c, h, w, generator=g) for c, (h, w) in zip((96, 192, 320, 384), sizes, strict=True)]
    logits, z = head.forward_with_assignment(features)
    ref_logits, ref_z = _reference_paca_head(head, features)
    assert logits.shape == (2, 150, 12, 20)
    torch.testing.assert_close(logits.double(), ref_logits, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(z.double(), ref_z, atol=1e-7, rtol=1e-4)
    # And the module itself run in float64 agrees with its float32 run.
    logits64, _ = head.double().forward_with_assignment([f.double() for f in features])
    torch.testing.assert_close(logits64, ref_logits, atol=1e-10, rtol=1e-10)


def test_build_segmentor_rejects_unknown_head() -> None:
    with pytest.raises(ValueError, match="unknown segmentation head"):
        build_segmentor(CLASSIFICATION_VARIANTS["pacavit_tiny_p2cconv_100_0"], "fcn")  # type: ignore[arg-type]


@torch.no_grad()
def test_segmentor_exposes_head_cluster_assignment() -> None:
    torch.manual_seed(1)
    model = models.get_arch("pacahead_pacavit_tiny_p2cconv_100_0").factory().eval()
    x = torch.randn(1, 3, 64, 64)
    logits, stages, head_z = model.forward_with_head_clusters(x)
    assert stages[3] is None and stages[0].shape == (1, 200, 16, 16)
    torch.testing.assert_close(logits, model(x))
    assert head_z is not None and head_z.shape == (1, 150, 16, 16)
    torch.testing.assert_close(head_z.sum(dim=(2, 3)), torch.ones(1, 150))


@pytest.mark.parametrize("hw", [(2, 3), (7, 9), (16, 16), (13, 5)])
def test_matrix_adaptive_pool_equals_torch_adaptive_avg_pool(hw: tuple[int, int]) -> None:
    from models.segmentation.uper_head import AdaptiveAvgPool

    x = torch.randn(2, 4, *hw, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for scale in (1, 2, 3, 6):
        torch.testing.assert_close(AdaptiveAvgPool(scale)(x), F.adaptive_avg_pool2d(x, scale), rtol=1e-12, atol=1e-12)


def test_ablation_checkpoint_with_other_cluster_counts_builds_from_its_rows(manifests_dir: Path) -> None:
    from models.segmentation.clusters import build_segmentor_for_checkpoint, checkpoint_clusters

    arch = "pacahead_pacavit_small_p2cconv_49_100"
    with torch.device("meta"):
        default = models.get_arch(arch).factory()
    state = {k: torch.empty(v.shape, device="meta") for k, v in default.state_dict().items()}
    assert checkpoint_clusters(state, "conv") == (200, 200, 200, 200)
    # A checkpoint trained with the ImageNet ablation counts 49, 64, 81, 100 instead of the 200 override.
    for i, rows in enumerate((49, 64, 81, 100), start=1):
        key = f"backbone.stage{i}.0.attn.clustering.clustering.4.weight"
        state[key] = torch.empty(rows, *state[key].shape[1:], device="meta")
    with pytest.raises(RuntimeError, match="size mismatch"):
        default.load_state_dict(state, strict=True, assign=True)
    with torch.device("meta"):
        fitted = build_segmentor_for_checkpoint(arch, state)
    assert fitted.backbone.config.clusters == (49, 64, 81, 100)
    fitted.load_state_dict(state, strict=True, assign=True)
    # mlp and teacher layouts are read from their own last clustering layers.
    with torch.device("meta"):
        mlp = models.get_arch("pacahead_pacavit_small_p2cmlp_100_0").factory().state_dict()
        teacher = models.get_arch("pacahead_pacavit_convmixer_small_100").factory().state_dict()
    assert checkpoint_clusters(mlp, "mlp") == (200, 200, 200, 0)
    assert checkpoint_clusters(teacher, "conv") == (200, 200, 200, 200)
