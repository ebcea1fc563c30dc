"""Mask R-CNN: official mmdet checkpoints convert and load strictly; every mmdet-parity fix; end-to-end runs;
a batch of same-size images gives each image what it gets alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import roi_align

import models
from models.config import PaCaConfig
from models.detection.anchors import FixedStrideAnchorGenerator
from models.detection.archs import DETECTION_BACKBONES
from models.detection.box_coder import SymmetricClampBoxCoder
from models.detection.convert import convert_mmdet_mask_rcnn
from models.detection.mask_rcnn import Detections, ImageRows, build_mask_rcnn
from models.detection.per_image import nms_per_image, pad_per_image, rank_within_image
from models.detection.roi_align import AlignedMultiScaleRoIAlign, mmdet_roi_levels
from models.postprocess import paste_masks
from models.variants import CLASSIFICATION_VARIANTS

SMALL_BACKBONE = PaCaConfig(embed_dims=(32, 64, 96, 128), depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                            clusters=(8, 8, 8, 0), num_classes=0)


def _manifest(manifests_dir: Path, name: str) -> dict:
    return json.loads((manifests_dir / name).read_text())


def _official_layout(manifests_dir: Path, backbone: str) -> list[tuple[str, list[int]]]:
    """The mmdet key layout of `mask_rcnn_<backbone>`: the detector manifest where one exists, otherwise
    the classification manifest minus `head.*` (prefixed `backbone.`) + Tiny's neck/heads with the FPN
    lateral inputs set to the backbone's dims (the mmdet FPN's `in_channels`)."""
    path = manifests_dir / f"mask_rcnn_{backbone}_coco.keys.json"
    if path.exists():
        return [(e["key"], e["shape"]) for e in _manifest(manifests_dir, path.name)["keys"]]
    dims = CLASSIFICATION_VARIANTS[backbone].embed_dims
    cls = _manifest(manifests_dir, f"{backbone}.keys.json")["keys"]
    tiny = _manifest(manifests_dir, "mask_rcnn_pacavit_tiny_p2cconv_100_0_coco.keys.json")["keys"]
    layout = [("backbone." + e["key"], e["shape"]) for e in cls if not e["key"].startswith("head.")]
    for e in tiny:
        if e["key"].startswith("backbone."):
            continue
        shape = list(e["shape"])
        if e["key"].startswith("neck.lateral_convs.") and e["key"].endswith(".weight"):
            shape[1] = dims[int(e["key"].split(".")[2])]
        layout.append((e["key"], shape))
    return layout


@pytest.mark.parametrize("backbone", sorted(DETECTION_BACKBONES))
def test_official_layout_converts_and_loads_strictly(manifests_dir: Path, backbone: str) -> None:
    layout = _official_layout(manifests_dir, backbone)
    synthetic = {key: torch.empty(shape, device="meta") for key, shape in layout}
    spec = models.get_arch(f"mask_rcnn_{backbone}")
    converted = spec.convert_checkpoint(synthetic)
    with torch.device("meta"):
        model = spec.factory()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    result = model.load_state_dict(converted, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_manifest_parameter_counts_match_after_background_rows(manifests_dir: Path) -> None:
    for size in ("tiny", "small", "base"):
        manifest = _manifest(manifests_dir, f"mask_rcnn_pacavit_{size}_p2cconv_100_0_coco.keys.json")
        with torch.device("meta"):
            model = models.get_arch(f"mask_rcnn_pacavit_{size}_p2cconv_100_0").factory()
        # torchvision adds 4 background regression rows and 1 background mask channel (with biases).
        extra = 4 * (1024 + 1) + (256 + 1)
        assert sum(p.numel() for p in model.parameters()) == manifest["param_count"] + extra


def test_tiny_official_checkpoint_file_loads_through_models_build_with_exact_reordering(
    manifests_dir: Path, tmp_path: Path
) -> None:
    g = torch.Generator().manual_seed(0)
    layout = _official_layout(manifests_dir, "pacavit_tiny_p2cconv_100_0")
    mm = {key: torch.randn(shape, generator=g) for key, shape in layout}
    path = tmp_path / "mask_rcnn_tiny.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": mm}, path)
    model = models.build("mask_rcnn_pacavit_tiny_p2cconv_100_0", checkpoint=path)
    sd = model.state_dict()
    equal = torch.testing.assert_close
    equal(sd["backbone.body.stage1.0.attn.clustering.clustering.4.weight"],
          mm["backbone.stage1.0.attn.clustering.clustering.4.weight"], rtol=0, atol=0)
    equal(sd["backbone.fpn.inner_blocks.2.0.weight"], mm["neck.lateral_convs.2.conv.weight"], rtol=0, atol=0)
    equal(sd["backbone.fpn.layer_blocks.3.0.bias"], mm["neck.fpn_convs.3.conv.bias"], rtol=0, atol=0)
    equal(sd["rpn.head.conv.0.0.weight"], mm["rpn_head.rpn_conv.weight"], rtol=0, atol=0)
    equal(sd["roi_heads.box_head.fc6.weight"], mm["roi_head.bbox_head.shared_fcs.0.weight"], rtol=0, atol=0)
    cls_w, cls_b = sd["roi_heads.box_predictor.cls_score.weight"], sd["roi_heads.box_predictor.cls_score.bias"]
    mm_cls_w, mm_cls_b = mm["roi_head.bbox_head.fc_cls.weight"], mm["roi_head.bbox_head.fc_cls.bias"]
    equal(cls_w[0], mm_cls_w[80], rtol=0, atol=0)  # background: mmdet last → torchvision first
    equal(cls_b[0], mm_cls_b[80], rtol=0, atol=0)
    equal(cls_w[1:], mm_cls_w[:80], rtol=0, atol=0)
    reg_w, reg_b = sd["roi_heads.box_predictor.bbox_pred.weight"], sd["roi_heads.box_predictor.bbox_pred.bias"]
    assert reg_w.shape == (324, 1024)
    assert not reg_w[:4].any() and not reg_b[:4].any()
    equal(reg_w[4:8], mm["roi_head.bbox_head.fc_reg.weight"][0:4], rtol=0, atol=0)
    equal(reg_w[4:], mm["roi_head.bbox_head.fc_reg.weight"], rtol=0, atol=0)
    mask_w = sd["roi_heads.mask_predictor.mask_fcn_logits.weight"]
    assert not mask_w[0].any() and not sd["roi_heads.mask_predictor.mask_fcn_logits.bias"][0]
    equal(mask_w[1:], mm["roi_head.mask_head.conv_logits.weight"], rtol=0, atol=0)
    equal(sd["roi_heads.mask_predictor.conv5_mask.weight"], mm["roi_head.mask_head.upsample.weight"], rtol=0, atol=0)
    equal(sd["roi_heads.mask_head.3.0.weight"], mm["roi_head.mask_head.convs.3.conv.weight"], rtol=0, atol=0)
    # Converting an already converted state_dict changes nothing.
    assert convert_mmdet_mask_rcnn(sd) is sd


def test_checkpoint_with_a_wrong_head_is_rejected(manifests_dir: Path) -> None:
    layout = _official_layout(manifests_dir, "pacavit_tiny_p2cconv_100_0")
    synthetic = {key: torch.empty(shape, device="meta") for key, shape in layout}
    synthetic["roi_head.bbox_head.fc_cls.weight"] = torch.empty(91, 1024, device="meta")  # 90 classes
    converted = convert_mmdet_mask_rcnn(synthetic)
    with torch.device("meta"):
        model = models.get_arch("mask_rcnn_pacavit_tiny_p2cconv_100_0").factory()
    with pytest.raises(RuntimeError, match=r"cls_score\.weight"):
        model.load_state_dict(converted, strict=True, assign=True)


# ------------------------------------------------------------------------------------------ the fixes


def test_rois_map_to_levels_by_the_mmdet_rule() -> None:
    sides = torch.tensor([10.0, 111.99, 112.0, 223.99, 224.0, 447.99, 448.0, 2000.0])
    boxes = torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], dim=1)
    assert mmdet_roi_levels(boxes, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # Non-square: √(w·h) decides (√(800·100) ≈ 283 → level 2, although the long side is 800).
    assert mmdet_roi_levels(torch.tensor([[0.0, 0.0, 800.0, 100.0]]), 4).tolist() == [2]


def test_aligned_pooler_equals_torchvision_roi_align_aligned_per_level() -> None:
    g = torch.Generator().manual_seed(1)
    image_hw = (256, 320)
    strides = (4, 8, 16, 32)
    features = [torch.randn(1, 5, math.ceil(image_hw[0] / s), math.ceil(image_hw[1] / s), generator=g)
                for s in strides]
    xy = torch.rand(80, 2, generator=g) * torch.tensor([300.0, 240.0])
    wh = torch.exp(torch.empty(80, 2).uniform_(math.log(0.3), math.log(900.0), generator=g))
    large = torch.tensor([[0.0, 0.0, 600.0, 500.0], [10.5, 20.25, 700.0, 460.0], [-5.0, 3.0, 330.0, 250.0]])
    boxes = torch.cat([torch.cat([xy, xy + wh], dim=1), large])
    pooler = AlignedMultiScaleRoIAlign(["0", "1", "2", "3"], 7)
    pooled = pooler({str(i): f for i, f in enumerate(features)}, [boxes], [image_hw])
    levels = mmdet_roi_levels(boxes, 4)
    assert set(levels.tolist()) == {0, 1, 2, 3}  # every level is exercised
    for i, (box, level) in enumerate(zip(boxes, levels.tolist(), strict=True)):
        expected = roi_align(features[level], [box[None]], 7, spatial_scale=1 / strides[level], sampling_ratio=0,
                             aligned=True)
        torch.testing.assert_close(pooled[i : i + 1], expected, rtol=0, atol=0)
    # The default torchvision pooler (aligned=False, sampling 2) gives visibly different features.
    unaligned = roi_align(features[0], [boxes[:1]], 7, spatial_scale=0.25, sampling_ratio=2, aligned=False)
    assert not torch.allclose(unaligned, roi_align(features[0], [boxes[:1]], 7, 0.25, 0, True))


def test_anchors_are_unrounded_mmdet_anchors_with_fixed_strides_at_odd_padded_size() -> None:
    generator = FixedStrideAnchorGenerator()
    padded_hw = (800, 1216)  # 800 / 32 = 25 is odd → P6 has 13 rows
    grids = [(math.ceil(padded_hw[0] / s), math.ceil(padded_hw[1] / s)) for s in (4, 8, 16, 32, 64)]
    features = [torch.zeros(1, 1, h, w) for h, w in grids]
    anchors = generator.level_anchors(features)
    # mmdet base anchors: size s = 8·stride, ratio r = h/w: w = s/√r, h = s·√r, centred at 0, float.
    for level, stride in enumerate((4, 8, 16, 32, 64)):
        size = 8 * stride
        for a, ratio in enumerate((0.5, 1.0, 2.0)):
            half_w, half_h = size / math.sqrt(ratio) / 2, size * math.sqrt(ratio) / 2
            rows, cols = grids[level]
            last = anchors[level].reshape(rows, cols, 3, 4)[rows - 1, cols - 1, a]
            cx, cy = (cols - 1) * stride, (rows - 1) * stride
            torch.testing.assert_close(last, torch.tensor([cx - half_w, cy - half_h, cx + half_w, cy + half_h]))
    assert anchors[0][0].tolist() == pytest.approx([-22.627417, -11.313708, 22.627417, 11.313708])
    # torchvision's own generator rounds the corners and derives P6's y stride as 800 // 13 = 61.
    tv = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    tv_anchors = tv(ImageList(torch.zeros(1, 3, *padded_hw), [padded_hw]), features)[0]
    tv_p6_last = tv_anchors[-3:]
    assert tv_p6_last[1, 1].item() == 12 * 61 - 256  # ratio 1 anchor, last row
    assert anchors[4][-2, 1].item() == 12 * 64 - 256
    train_path = generator(ImageList(torch.zeros(1, 3, *padded_hw), [padded_hw]), features)[0]
    torch.testing.assert_close(train_path, torch.cat(anchors))


def test_box_coder_clamps_dw_dh_on_both_sides_like_mmdet() -> None:
    proposals = torch.tensor([[10.0, 20.0, 110.0, 70.0]])
    ours, tv = SymmetricClampBoxCoder((10.0, 10.0, 5.0, 5.0)), BoxCoder((10.0, 10.0, 5.0, 5.0))
    shrink = torch.tensor([[0.0, 0.0, -50.0, -50.0]])  # dw = dh = −10 before the clamp
    box = ours.decode_single(shrink, proposals)[0]
    limit = 16 / 1000
    torch.testing.assert_close(box[2] - box[0], torch.tensor(100.0 * limit))
    torch.testing.assert_close(box[3] - box[1], torch.tensor(50.0 * limit))
    tv_box = tv.decode_single(shrink, proposals)[0]
    assert (tv_box[2] - tv_box[0]).item() == pytest.approx(100.0 * math.exp(-10), rel=1e-2)  # float32 cancellation
    grow = torch.tensor([[0.0, 0.0, 50.0, 50.0]])
    torch.testing.assert_close(ours.decode_single(grow, proposals), tv.decode_single(grow, proposals))
    # Within the clamp range the two decoders agree (centre/size form, no +1).
    g = torch.Generator().manual_seed(2)
    deltas = torch.randn(50, 8, generator=g)
    many = proposals.repeat(50, 1) + torch.rand(50, 4, generator=g) * 5
    torch.testing.assert_close(ours.decode_single(deltas, many), tv.decode_single(deltas, many), rtol=1e-5, atol=1e-4)


def _small_detector(**overrides) -> torch.nn.Module:
    """A few-channel detector; 10 detections keep the (256-channel) mask head cheap in tests."""
    torch.manual_seed(0)
    return build_mask_rcnn(SMALL_BACKBONE, num_classes=3, fpn_channels=32, box_detections_per_img=10, **overrides)


@torch.no_grad()
def test_degenerate_border_boxes_are_kept_like_mmdet() -> None:
    model = _small_detector()
    predictor = model.roi_heads.box_predictor
    predictor.cls_score.weight.zero_()
    predictor.cls_score.bias.copy_(torch.tensor([0.0, 8.0, 0.0, 0.0]))  # class 1 (label 0) dominates
    predictor.bbox_pred.weight.zero_()
    predictor.bbox_pred.bias.zero_()
    predictor.bbox_pred.bias[4] = -100.0  # label 0: dx = −10 widths → pushed left of the image, clipped
    levels = list(model.backbone(torch.randn(1, 3, 64, 64)).values())[:4]
    proposals = torch.tensor([[0.0, 10.0, 10.0, 20.0], [20.0, 20.0, 40.0, 50.0]])
    found = model._classify(levels, ImageRows(torch.zeros(2, dtype=torch.int64), torch.arange(2), proposals), (64, 64))
    boxes, scores, labels = found.boxes, found.scores, found.labels
    degenerate = (boxes[:, 2] - boxes[:, 0]) <= 0
    assert degenerate.sum().item() == 2 and (labels[degenerate] == 0).all()
    assert (scores > 0.99).sum().item() == 2
    # torchvision's postprocess would have dropped them (w < 1e-2).
    class_logits, box_regression = predictor(model.roi_heads.box_head(
        model.roi_heads.box_roi_pool.pool(levels, [proposals])))
    tv_boxes, _, _ = type(model.roi_heads).postprocess_detections(
        model.roi_heads, class_logits, box_regression, [proposals], [(64, 64)])
    assert ((tv_boxes[0][:, 2] - tv_boxes[0][:, 0]) > 0).all()


@torch.no_grad()
def test_rpn_keeps_only_positive_size_proposals() -> None:
    model = _small_detector()
    head = model.rpn.head
    head.cls_logits.weight.zero_()
    head.cls_logits.bias.fill_(1.0)
    head.bbox_pred.weight.zero_()
    head.bbox_pred.bias.zero_()
    head.bbox_pred.bias[0] = -1000.0  # anchor 0 of every location: moved far left → clipped to zero width
    levels = list(model.backbone(torch.randn(1, 3, 64, 96)).values())
    proposals = model._proposals(levels, (64, 96)).boxes
    assert len(proposals) > 0
    assert ((proposals[:, 2] - proposals[:, 0]) > 0).all() and ((proposals[:, 3] - proposals[:, 1]) > 0).all()
    assert (proposals[:, 2] <= 96).all() and (proposals[:, 3] <= 64).all() and (proposals >= 0).all()


# --------------------------------------------------------------------------------------- end to end


def _spread_scores(model: torch.nn.Module, seed: int) -> None:
    """Random init gives every class ≈ 1/81 < 0.05; spread the classifier so detections appear."""
    g = torch.Generator().manual_seed(seed)
    predictor = model.roi_heads.box_predictor
    predictor.cls_score.weight.copy_(torch.randn(predictor.cls_score.weight.shape, generator=g) * 0.05)
    predictor.cls_score.bias.copy_(torch.randn(predictor.cls_score.bias.shape, generator=g) * 2)
    predictor.bbox_pred.weight.copy_(torch.randn(predictor.bbox_pred.weight.shape, generator=g) * 0.01)


@torch.no_grad()
def test_tiny_detector_end_to_end_one_image_at_a_time() -> None:
    torch.manual_seed(0)
    model = models.get_arch("mask_rcnn_pacavit_tiny_p2cconv_100_0").factory().eval()
    model.roi_heads.detections_per_img = 25  # keeps the mask head cheap; the official value is 100
    _spread_scores(model, 3)
    g = torch.Generator().manual_seed(4)
    first, second = torch.randn(3, 96, 128, generator=g), torch.randn(3, 80, 112, generator=g)
    together = model([first, second])
    alone = model([second])[0]
    assert len(together) == 2
    for key in ("boxes", "labels", "scores", "masks"):
        torch.testing.assert_close(together[1][key], alone[key], rtol=0, atol=0)
    result = together[0]
    count = len(result["scores"])
    assert 0 < count <= 25
    assert result["masks"].shape == (count, 1, 96, 128) and result["masks"].dtype == torch.bool
    assert result["masks"].any()
    assert ((result["labels"] >= 1) & (result["labels"] <= 80)).all()
    assert (result["scores"] > 0.05).all() and (result["scores"][:-1] >= result["scores"][1:]).all()
    boxes = result["boxes"]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all()
    # The raw (exported) path on the padded input gives the same detections, 0-based labels and 28×28 masks.
    padded = torch.nn.functional.pad(first, (0, 0, 0, 0))[None]  # 96×128 is already a multiple of 32
    *rows, counts = model.forward_raw(padded, (96, 128))
    assert counts.tolist() == [count] and rows[3].shape == (1, 25, 28, 28)
    raw_boxes, raw_scores, raw_labels, mask_probs = (t[0, :count] for t in rows)
    torch.testing.assert_close(raw_scores, result["scores"], rtol=0, atol=0)
    torch.testing.assert_close(raw_boxes, boxes, rtol=0, atol=0)
    torch.testing.assert_close(raw_labels + 1, result["labels"], rtol=0, atol=0)
    assert mask_probs.shape == (count, 28, 28) and ((mask_probs >= 0) & (mask_probs <= 1)).all()
    np.testing.assert_array_equal(result["masks"][:, 0].numpy(), paste_masks(mask_probs.numpy(), raw_boxes.numpy(),
                                                                              (96, 128)))
    # Second image: padded to 96×128 internally, boxes clipped to its own 80×112.
    assert (together[1]["boxes"][:, 2] <= 112).all() and (together[1]["boxes"][:, 3] <= 80).all()


@torch.no_grad()
def test_forward_with_clusters_returns_backbone_assignments() -> None:
    model = _small_detector()
    x = torch.randn(1, 3, 64, 96)
    detections, clusters = model.forward_with_clusters(x)
    assert [None if c is None else tuple(c.shape) for c in clusters] == [
        (1, 8, 16, 24), (1, 8, 8, 12), (1, 8, 4, 6), None]
    raw = model.forward_raw(x, (64, 96))
    assert len(raw) == len(detections) == 5
    for a, b in zip(raw, detections, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert model.backbone.config.clusters == (8, 8, 8, 0)


def test_training_step_returns_torchvision_losses() -> None:
    model = _small_detector(anchor_sizes=((8,), (16,), (32,), (64,), (128,))).train()
    images = [torch.randn(3, 64, 64), torch.randn(3, 64, 96)]
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:30, 12:40] = 1
    targets = [
        {"boxes": torch.tensor([[12.0, 10.0, 40.0, 30.0]]), "labels": torch.tensor([2]), "masks": masks},
        {"boxes": torch.tensor([[5.0, 5.0, 50.0, 60.0]]), "labels": torch.tensor([1]),
         "masks": torch.ones(1, 64, 96, dtype=torch.uint8)},
    ]
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.body.patch_embed.proj[0].weight.grad is not None


def test_registered_detection_archs() -> None:
    spec = models.get_arch("mask_rcnn_pacavit_convmixer_base_100")
    assert spec.task == "detection" and spec.labels == "coco80"
    assert spec.preprocess.pad_divisor == 32 and spec.preprocess.size == (1333, 800)
    assert spec.checkpoint_files == ("mask_rcnn_pacavit_convmixer_base_100_0_mstrain_480_800_1x_coco.pth",)
    assert models.get_arch("mask_rcnn_pacavit_small_p2cconv_2_0").checkpoint_files == (
        "mask_rcnn_pacavit_small_p2cconv_2_0_mstrain_480_800_1x_coco.pth",)
    assert len(models.list_archs("detection")) >= 13


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@torch.no_grad()
def test_cuda_kernels_match_cpu_on_fixed_boxes() -> None:
    """Backbone + FPN, aligned RoIAlign (CUDA kernel) and the mask head agree with the CPU path.

    Fixed boxes and labels keep NMS tie-breaking out of the comparison."""
    model = _small_detector()
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(8))
    boxes = torch.tensor([[3.0, 4.5, 60.0, 50.0], [10.0, 20.0, 120.0, 90.0], [0.0, 0.0, 7.5, 9.0]])
    labels = torch.tensor([0, 2, 1])
    cpu_levels = list(model.backbone(x).values())
    cpu_pooled = model.roi_heads.box_roi_pool.pool(cpu_levels[:4], [boxes])
    rows = Detections(torch.zeros(3, dtype=torch.int64), torch.arange(3), boxes, torch.ones(3), labels)
    cpu_masks = model._mask_probs(cpu_levels[:4], rows)
    model = model.cuda()
    gpu_levels = list(model.backbone(x.cuda()).values())
    for cpu_level, gpu_level in zip(cpu_levels, gpu_levels, strict=True):
        torch.testing.assert_close(gpu_level.cpu(), cpu_level, rtol=1e-3, atol=1e-3)
    gpu_pooled = model.roi_heads.box_roi_pool.pool(gpu_levels[:4], [boxes.cuda()])
    torch.testing.assert_close(gpu_pooled.cpu(), cpu_pooled, rtol=1e-3, atol=1e-3)
    gpu_masks = model._mask_probs(gpu_levels[:4], Detections(*(t.cuda() for t in rows)))
    torch.testing.assert_close(gpu_masks.cpu(), cpu_masks, rtol=1e-3, atol=1e-3)
    raw = model.forward_raw(x.cuda(), (96, 128))
    assert raw[0].is_cuda and raw[3].shape[2:] == (28, 28)


def test_forward_raw_refuses_what_is_not_a_batch_of_images() -> None:
    model = _small_detector()
    for bad in (torch.zeros(3, 64, 64), torch.zeros(1, 1, 64, 64), torch.zeros(0, 3, 64, 64)):
        with pytest.raises(ValueError, match=r"expected pixel_values of shape \(B, 3, H, W\)"):
            model.forward_raw(bad, (64, 64))


# ----------------------------------------------------------------------------------------- batching


def test_per_image_nms_is_mmcv_offset_nms_of_each_image_alone() -> None:
    """Per image: the candidates' own offsets (group · (max coordinate + 1)), torchvision NMS, score order."""
    from torchvision.ops import nms

    g = torch.Generator().manual_seed(5)
    batch, count = 3, 60
    xy = torch.rand(batch, count, 2, generator=g) * 80
    boxes = torch.cat([xy, xy + 5 + torch.rand(batch, count, 2, generator=g) * 40], dim=2)
    boxes[2] *= 3  # a larger image: its offsets must not leak into the others
    scores = torch.rand(batch, count, generator=g)
    groups = torch.randint(0, 4, (batch, count), generator=g)
    candidates = torch.rand(batch, count, generator=g) > 0.3
    kept = nms_per_image(boxes, scores, candidates, groups, 0.5)
    image, index = kept[:, 0], kept[:, 1]
    assert (image.diff() >= 0).all()  # image-major
    for b in range(batch):
        chosen = torch.where(candidates[b])[0]
        alone = boxes[b, chosen]
        offsets = groups[b, chosen].float() * (torch.cat([alone.reshape(-1), alone.new_zeros(1)]).max() + 1)
        expected = chosen[nms(alone + offsets[:, None], scores[b, chosen], 0.5)]
        assert index[image == b].tolist() == expected.tolist()
    rank = rank_within_image(image, batch)
    assert all(rank[image == b].tolist() == list(range(int((image == b).sum()))) for b in range(batch))
    padded = pad_per_image(scores[image, index], image, rank, batch, count)
    for b in range(batch):
        mine = index[image == b]
        assert padded[b, : len(mine)].tolist() == scores[b, mine].tolist() and not padded[b, len(mine) :].any()


@pytest.fixture(scope="module")
def trained_demo_detector():
    """The committed demo detector, score threshold 0.3: real detections, fewer than its 20 rows per image."""
    from demo import evaluate
    from demo.train import to_input
    from models.demo.archs import weights_path

    model = models.build("demo_digits_det", weights_path("demo_digits_det")).eval()
    model.roi_heads.score_thresh = 0.3
    scenes = evaluate.heldout_scenes(4)
    return model, to_input(np.stack([s.image for s in scenes]), "demo_digits_det")


@torch.no_grad()
def test_batch_of_same_size_images_equals_each_alone(trained_demo_detector) -> None:
    """Each image of a batch gets its alone-detections: same count, labels and order; floats to rounding.

    Not bit-identical in PyTorch: its CPU matrix products block by the whole batch's size, so backbone
    features differ in the last bits (≈1e-7 relative). Everything after the backbone is per image."""
    model, scenes = trained_demo_detector
    boxes, scores, labels, mask_probs, counts = model.forward_raw(scenes, (128, 128))
    rows = model.roi_heads.detections_per_img
    assert boxes.shape == (4, rows, 4) and mask_probs.shape == (4, rows, 28, 28) and counts.dtype == torch.int64
    assert len(set(counts.tolist())) > 1 and (counts > 0).all() and (counts < rows).all()
    for image in range(4):
        alone = model.forward_raw(scenes[image : image + 1], (128, 128))
        count = int(alone[4][0])
        assert count == counts[image]
        torch.testing.assert_close(alone[2][0], labels[image], rtol=0, atol=0)
        for one, batched in zip((alone[0], alone[3]), (boxes, mask_probs), strict=True):
            torch.testing.assert_close(one[0], batched[image], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(alone[1][0], scores[image], rtol=1e-5, atol=1e-6)
        # Padding rows: zeros; real rows: above the threshold, best first.
        assert not boxes[image, count:].any() and not scores[image, count:].any()
        assert not labels[image, count:].any() and not mask_probs[image, count:].any()
        assert (scores[image, :count] > 0.3).all() and (scores[image, :count].diff() <= 0).all()


@torch.no_grad()
def test_eval_forward_pads_and_runs_each_image_alone(trained_demo_detector) -> None:
    """The torchvision-style API returns only the real rows of each image."""
    model, scenes = trained_demo_detector
    results = model(list(scenes[:2]))
    counts = model.forward_raw(scenes[:2], (128, 128))[4]
    assert [len(r["scores"]) for r in results] == counts.tolist()
    assert all(r["masks"].shape[1:] == (1, 128, 128) for r in results)
