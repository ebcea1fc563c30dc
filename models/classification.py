"""Registers the 13 official ImageNet-1k classification variants."""

from __future__ import annotations

from functools import partial

from models.preprocess_spec import IMAGENET_CLASSIFICATION
from models.registry import ArchSpec, register
from models.variants import CLASSIFICATION_VARIANTS


def _build(name: str):
    from models.paca_vit import PaCaViT

    return PaCaViT(CLASSIFICATION_VARIANTS[name])


for _name in CLASSIFICATION_VARIANTS:
    register(ArchSpec(
        name=_name,
        task="classification",
        factory=partial(_build, _name),
        preprocess=IMAGENET_CLASSIFICATION,
        labels="imagenet1k",
        checkpoint_files=(f"IMNET_224_{_name}.pth",),
    ))
