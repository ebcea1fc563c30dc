"""The three demo archs (`demo_digits_cls`, `demo_digits_det`, `demo_digits_seg`) and where their files live.

Small PaCa-ViT configurations of the same model code as the official variants. Factories import torch
and the downstream builders lazily, so registering (and listing) works without them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from models.config import PaCaConfig
from models.preprocess_spec import PreprocessSpec
from models.registry import ArchSpec, register

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# Classification input: one digit image resized exactly to 32×32.
DIGIT_SIZE = 32
# Scenes: canvases of SCENE_HW; inputs keep the aspect ratio within (128, 128) and pad to 32.
SCENE_HW = (128, 128)

CLS_CONFIG = PaCaConfig(
    embed_dims=(32, 64, 96, 128),
    depths=(1, 1, 2, 1),
    num_heads=(1, 2, 4, 8),
    clusters=(8, 8, 4, 0),
    num_classes=10,
)
# The scene models share the classifier's backbone configuration: they start from its trained weights,
# the demo's stand-in for ImageNet pre-training (see demo.train).
SCENE_BACKBONE = dataclasses.replace(CLS_CONFIG, num_classes=0)
SEG_NUM_CLASSES = 11  # background + ten digits
SEG_CHANNELS = 64
DET_NUM_CLASSES = 10
DET_FPN_CHANNELS = 64
# Scene digits are 16–56 px tall; anchors and RoI budgets sized for 128-px canvases.
DET_OVERRIDES: dict[str, object] = {
    "min_size": SCENE_HW[0],
    "max_size": SCENE_HW[1],
    "anchor_sizes": ((8,), (16,), (32,), (64,), (128,)),
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 100,
    "rpn_pre_nms_top_n_train": 600,
    "rpn_post_nms_top_n_train": 300,
    "box_detections_per_img": 20,
    "rpn_batch_size_per_image": 128,
    "box_batch_size_per_image": 32,
    "box_score_thresh": 0.05,
}

DIGIT_PREPROCESS = PreprocessSpec(
    resize_mode="exact", size=(DIGIT_SIZE, DIGIT_SIZE), interpolation="bilinear"
)
SCENE_PREPROCESS = PreprocessSpec(
    resize_mode="keep_ratio_within", size=SCENE_HW, interpolation="bilinear", pad_divisor=32
)

# Served model name per arch: the `demo-` prefix tells them apart from real PaCa-ViT checkpoints.
SERVED_NAMES = {
    "demo_digits_cls": "demo-digits-classifier",
    "demo_digits_det": "demo-digits-detector",
    "demo_digits_seg": "demo-digits-segmenter",
}


def weights_path(arch: str) -> Path:
    """Committed safetensors weights of a demo arch."""
    return WEIGHTS_DIR / f"{arch}.safetensors"


def _build_classifier():
    from models.paca_vit import PaCaViT

    return PaCaViT(CLS_CONFIG)


def _build_segmenter():
    from models.segmentation import build_segmentor

    return build_segmentor(SCENE_BACKBONE, head="paca", num_classes=SEG_NUM_CLASSES, channels=SEG_CHANNELS)


def _build_detector():
    from torchvision.models.detection.faster_rcnn import TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads

    from models.detection import build_mask_rcnn

    # Narrow RoI heads: torchvision's defaults (four 256-channel mask convs) would cost ~6× more per RoI
    # than the whole 128-px backbone, far beyond the 2-core training budget.
    small_heads = {
        "box_head": TwoMLPHead(DET_FPN_CHANNELS * 7 * 7, 1024),
        "mask_head": MaskRCNNHeads(DET_FPN_CHANNELS, (DET_FPN_CHANNELS, 256), 1),
    }
    return build_mask_rcnn(
        SCENE_BACKBONE, num_classes=DET_NUM_CLASSES, fpn_channels=DET_FPN_CHANNELS, **DET_OVERRIDES, **small_heads
    )


DEMO_ARCHS = (
    register(ArchSpec(
        name="demo_digits_cls",
        task="classification",
        factory=_build_classifier,
        preprocess=DIGIT_PREPROCESS,
        labels="digits10",
        description="Demo digit classifier (small PaCa-ViT trained on MNIST digits, 32×32): other images give "
        "meaningless answers; not an official checkpoint.",
        weights=weights_path("demo_digits_cls"),
    )),
    register(ArchSpec(
        name="demo_digits_det",
        task="detection",
        factory=_build_detector,
        preprocess=SCENE_PREPROCESS,
        labels="digits10",
        description="Demo digit detector (Mask R-CNN, small PaCa-ViT backbone) trained on MNIST scenes: other "
        "images give meaningless answers; not an official checkpoint.",
        weights=weights_path("demo_digits_det"),
    )),
    register(ArchSpec(
        name="demo_digits_seg",
        task="segmentation",
        factory=_build_segmenter,
        preprocess=SCENE_PREPROCESS,
        labels="digit_scene11",
        description="Demo digit segmenter (PaCa head, small PaCa-ViT) trained on MNIST scenes: other images give "
        "meaningless answers; not an official checkpoint.",
        weights=weights_path("demo_digits_seg"),
    )),
)
