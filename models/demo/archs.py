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

# Digit images are 32×32 (the held-out set and the samples); the classifier resizes them exactly to
# 48×48 first: its stride-4 stem then sees 12×12 patches instead of 8×8, which thin strokes need.
DIGIT_SIZE = 32
CLS_INPUT_SIZE = 48
# Scenes: canvases of SCENE_HW; inputs keep the aspect ratio within (128, 128) and pad to 32.
SCENE_HW = (128, 128)
# The segmenter trains on scenes of up to SCENE_HW but is served with inputs resized to fit (160, 160):
# a 128² scene is upscaled 1.25×, so its thin strokes and small digits cover more of the stride-4 grid
# (train at a lower resolution, test at a higher one, as in Touvron et al., "Fixing the train-test
# resolution discrepancy", 2019). Chosen on the calibration scenes (training digits) with the trained
# segmenter and its offset calibrated at 128: majority label 96.5 % at 128, 97.4 % at 144, 97.5 % at
# 160, 95.8 % at 176; the offset was then re-calibrated at 160 (docs/demo-models.md).
SEG_INPUT_HW = (160, 160)

# The scene models' pre-training: a digit classifier of BACKBONE_CONFIG, trained on the digits by `paca
# train-demo` and committed (`demo_digits_backbone.safetensors`), whose PaCa body the segmenter and the
# detector start from — the demo's stand-in for ImageNet pre-training (see demo.train). Not served: the
# served classifier is trained on its own, so it can improve without retraining the scene models.
BACKBONE_PRETRAINING = "demo_digits_backbone"
BACKBONE_CONFIG = PaCaConfig(
    embed_dims=(64, 128, 192, 256),
    depths=(1, 2, 3, 1),
    num_heads=(2, 4, 8, 8),
    clusters=(8, 8, 4, 0),
    num_classes=10,
)
SCENE_BACKBONE = dataclasses.replace(BACKBONE_CONFIG, num_classes=0)
CLS_CONFIG = BACKBONE_CONFIG
SEG_NUM_CLASSES = 11  # background + ten digits
SEG_CHANNELS = 64
DET_NUM_CLASSES = 10
DET_FPN_CHANNELS = 64
DET_BOX_REPRESENTATION = 256  # width of the box head's two-layer MLP (torchvision: 1024)
DET_MASK_CONVS = (96, 96, 96, 96)  # mask head convs (torchvision: four of 256)
# The REST API's default score threshold (`service.tasks.detection.DEFAULT_SCORE_THRESHOLD`, mmdet's 0.3;
# a test keeps the two equal): `paca demo eval` reports found/precision at it, what a user sees by default.
DETECTION_SCORE_THRESHOLD = 0.3
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
    "box_batch_size_per_image": 64,
    "box_score_thresh": 0.05,
    # Digits never overlap, so one box per place: NMS over all classes keeps the best label only
    # (mmdet's class-wise NMS can return a "3" and an "8" stacked on one digit).
    "class_agnostic_nms": True,
}

# The first demo classifier's configuration at 32×32, with no trained weights: a real PaCa-ViT that runs in
# well under 1 ms per image on one core. The serving benchmark's model (where the stack's own cost decides
# throughput) and the test suite's PaCa classifier; it stays this size while the demo models grow.
TINY_CLS_CONFIG = PaCaConfig(
    embed_dims=(32, 64, 96, 128),
    depths=(1, 1, 2, 1),
    num_heads=(1, 2, 4, 8),
    clusters=(8, 8, 4, 0),
    num_classes=10,
)

DIGIT_PREPROCESS = PreprocessSpec(
    resize_mode="exact", size=(CLS_INPUT_SIZE, CLS_INPUT_SIZE), interpolation="bilinear"
)
SCENE_PREPROCESS = PreprocessSpec(
    resize_mode="keep_ratio_within", size=SCENE_HW, interpolation="bilinear", pad_divisor=32
)
SEG_PREPROCESS = PreprocessSpec(
    resize_mode="keep_ratio_within", size=SEG_INPUT_HW, interpolation="bilinear", pad_divisor=32
)

# Served model name per arch: the `demo-` prefix tells them apart from real PaCa-ViT checkpoints.
SERVED_NAMES = {
    "demo_digits_cls": "demo-digits-classifier",
    "demo_digits_det": "demo-digits-detector",
    "demo_digits_seg": "demo-digits-segmenter",
}


def weights_path(arch: str) -> Path:
    """Committed safetensors weights of a demo arch (or of BACKBONE_PRETRAINING)."""
    return WEIGHTS_DIR / f"{arch}.safetensors"


def _build_classifier():
    from models.paca_vit import PaCaViT

    return PaCaViT(CLS_CONFIG)


def build_backbone_pretraining():
    """The untrained digit classifier whose trained body the scene models adopt (BACKBONE_PRETRAINING)."""
    from models.paca_vit import PaCaViT

    return PaCaViT(BACKBONE_CONFIG)


def _build_tiny_classifier():
    from models.paca_vit import PaCaViT

    return PaCaViT(TINY_CLS_CONFIG)


def _build_segmenter():
    from models.segmentation import build_segmentor

    return build_segmentor(SCENE_BACKBONE, head="paca", num_classes=SEG_NUM_CLASSES, channels=SEG_CHANNELS)


def _build_detector():
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    from models.detection import build_mask_rcnn

    # Narrow RoI heads: torchvision's defaults (a 1024-wide box MLP, four 256-channel mask convs) would
    # cost more per RoI than the whole 128-px backbone and most of the weights' size. torchvision sizes
    # the predictors for its defaults, so the matching narrow predictors replace them after construction.
    model = build_mask_rcnn(
        SCENE_BACKBONE, num_classes=DET_NUM_CLASSES, fpn_channels=DET_FPN_CHANNELS, **DET_OVERRIDES,
        box_head=TwoMLPHead(DET_FPN_CHANNELS * 7 * 7, DET_BOX_REPRESENTATION),
        mask_head=MaskRCNNHeads(DET_FPN_CHANNELS, DET_MASK_CONVS, 1),
    )
    classes = DET_NUM_CLASSES + 1  # torchvision's background class 0
    model.roi_heads.box_predictor = FastRCNNPredictor(DET_BOX_REPRESENTATION, classes)
    model.roi_heads.mask_predictor = MaskRCNNPredictor(DET_MASK_CONVS[-1], DET_MASK_CONVS[-1], classes)
    return model


DEMO_ARCHS = (
    register(ArchSpec(
        name="demo_digits_cls",
        task="classification",
        factory=_build_classifier,
        preprocess=DIGIT_PREPROCESS,
        labels="digits10",
        description="Demo digit classifier (small PaCa-ViT trained on MNIST digits, input resized to 48×48): other "
        "images give meaningless answers; not an official checkpoint.",
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
        preprocess=SEG_PREPROCESS,
        labels="digit_scene11",
        description="Demo digit segmenter (PaCa head, small PaCa-ViT) trained on MNIST scenes, input resized to fit "
        "160×160: other images give meaningless answers; not an official checkpoint.",
        weights=weights_path("demo_digits_seg"),
    )),
)

TINY_DIGITS_CLS = register(ArchSpec(
    name="tiny_digits_cls",
    task="classification",
    factory=_build_tiny_classifier,
    preprocess=PreprocessSpec(resize_mode="exact", size=(DIGIT_SIZE, DIGIT_SIZE), interpolation="bilinear"),
    labels="digits10",
    description="Tiny PaCa-ViT digit classifier configuration (32×32) with no trained weights: the serving "
    "benchmark's and the tests' fast model; its answers are random.",
))
