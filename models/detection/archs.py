"""Registers the COCO Mask R-CNN archs `mask_rcnn_<backbone>` (files and mmdet setup: docs/downstream-models.md)."""

from __future__ import annotations

from functools import partial

from models.preprocess_spec import COCO_DETECTION
from models.registry import ArchSpec, register
from models.variants import CLASSIFICATION_VARIANTS

TEACHER_FILE_NOTE = (
    "The README's 'PaCa-Small (teacher)' COCO file is named mask_rcnn_pacavit_convmixer_tiny_100_0_..., but its "
    "40.9 M parameters match convmixer_small (20.7 M backbone + 20.2 M detector); if it does not load into one, "
    "try the other."
)


def _release_file(backbone: str) -> str:
    name = backbone.removeprefix("pacavit_")
    if name.startswith("convmixer_"):
        name += "_0"  # README file names use _100_0 for the teacher variants
    return f"mask_rcnn_pacavit_{name}_mstrain_480_800_1x_coco.pth"


DETECTION_BACKBONES: dict[str, str] = {
    backbone: _release_file(backbone)
    for backbone in (
        "pacavit_tiny_p2cconv_100_0", "pacavit_small_p2cconv_100_0", "pacavit_base_p2cconv_100_0",
        "pacavit_small_p2cmlp_100_0",
        "pacavit_convmixer_tiny_100", "pacavit_convmixer_base_100",
        *(f"pacavit_small_p2cconv_{m}" for m in ("2_0", "49_0", "49_100", "100_49", "100", "100_blockwise")),
    )
}
# The file named convmixer_tiny most likely holds the convmixer_small detector (README "Small (teacher)").
DETECTION_BACKBONES["pacavit_convmixer_small_100"] = DETECTION_BACKBONES["pacavit_convmixer_tiny_100"]


def _build(backbone: str):
    from models.detection.mask_rcnn import build_mask_rcnn

    return build_mask_rcnn(CLASSIFICATION_VARIANTS[backbone], num_classes=80)


def _convert(state_dict):
    from models.detection.convert import convert_mmdet_mask_rcnn

    return convert_mmdet_mask_rcnn(state_dict)


for _backbone, _file in DETECTION_BACKBONES.items():
    register(ArchSpec(
        name=f"mask_rcnn_{_backbone}",
        task="detection",
        factory=partial(_build, _backbone),
        preprocess=COCO_DETECTION,
        labels="coco80",
        checkpoint_files=(_file,),
        convert_checkpoint=_convert,
        description=f"COCO Mask R-CNN (FPN, 1x) on {_backbone}; mmdet test-time behaviour, batches same-size images",
        backbone=_backbone,
        note=TEACHER_FILE_NOTE if "convmixer_tiny" in _file else "",
    ))
