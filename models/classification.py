"""Registers the 13 official ImageNet-1k classification variants with their release files (docs/models.md)."""

from __future__ import annotations

from functools import partial

from models.preprocess_spec import IMAGENET_CLASSIFICATION
from models.registry import ArchSpec, register
from models.variants import CLASSIFICATION_VARIANTS

# The official README (github.com/iVMCL/PaCaViT) links no ImageNet checkpoint for this variant.
NO_RELEASED_CHECKPOINT = frozenset({"pacavit_convmixer_tiny_100"})


def _build(name: str):
    from models.paca_vit import PaCaViT

    return PaCaViT(CLASSIFICATION_VARIANTS[name])


def _describe(name: str) -> str:
    config = CLASSIFICATION_VARIANTS[name]
    if config.teacher_depths is not None:
        clustering = "ConvMixer teacher clustering"
    else:
        clustering = f"{config.clustering} clustering" + (", block-wise" if config.onsite_clustering else "")
    clusters = "/".join(str(m) for m in config.clusters)
    return (f"ImageNet-1k classifier, dims {config.embed_dims}, depths {config.depths}, {clustering}, "
            f"clusters {clusters}")


for _name in CLASSIFICATION_VARIANTS:
    register(ArchSpec(
        name=_name,
        task="classification",
        factory=partial(_build, _name),
        preprocess=IMAGENET_CLASSIFICATION,
        labels="imagenet1k",
        checkpoint_files=() if _name in NO_RELEASED_CHECKPOINT else (f"IMNET_224_{_name}.pth",),
        description=_describe(_name),
    ))
