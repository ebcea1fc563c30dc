"""Registers the ADE20k segmentation archs `pacahead_<backbone>`, `upernet_<backbone>` (docs/downstream-models.md)."""

from __future__ import annotations

from functools import partial

from models.preprocess_spec import ADE20K_SEGMENTATION
from models.registry import ArchSpec, register
from models.variants import CLASSIFICATION_VARIANTS

ADE20K_CLUSTERS = 200  # `downstream_cluster_num` of every official ADE20k config

# Backbones the official repo pairs with the PaCa head, and the release file of each.
PACA_HEAD_BACKBONES: dict[str, str] = {
    "pacavit_tiny_p2cconv_100_0": "pacahead_pacavit_tiny_p2cconv_100_0_512x512_160k_ade20k.pth",
    "pacavit_small_p2cconv_100_0": "pacahead_pacavit_small_p2cconv_100_0_512x512_160k_ade20k.pth",
    "pacavit_base_p2cconv_100_0": "pacahead_pacavit_base_p2cconv_100_0_512x512_160k_ade20k.pth",
    "pacavit_small_p2cmlp_100_0": "pacahead_pacavit_small_p2cmlp_100_0_512x512_160k_ade20k.pth",
    "pacavit_convmixer_small_100": "pacahead_pacavit_convmixer_small_100_0_512x512_160k_ade20k.pth",
    "pacavit_convmixer_base_100": "pacahead_pacavit_convmixer_base_100_0_512x512_160k_ade20k.pth",
    # Ablations: PaCa-head models although their release files are named `upernet_`.
    **{
        f"pacavit_small_p2cconv_{m}": f"upernet_pacavit_small_p2cconv_{m}_512x512_160k_ade20k.pth"
        for m in ("2_0", "49_0", "49_100", "100_49", "100", "100_blockwise")
    },
}
UPERNET_BACKBONES: dict[str, str] = {
    v: f"upernet_pacavit_{v.removeprefix('pacavit_')}_512x512_160k_ade20k.pth"
    for v in ("pacavit_tiny_p2cconv_100_0", "pacavit_small_p2cconv_100_0", "pacavit_base_p2cconv_100_0")
}

ABLATION_NOTE = (
    "Ablation backbone built with the configs' 200-cluster override; the released checkpoint may use "
    "other cluster counts (its README sizes differ) — a shape mismatch on clustering layers is reported on load."
)


def segmentation_backbone_config(backbone: str):
    """The backbone config of the ADE20k models: classification variant with 200 clusters per clustering stage."""
    import dataclasses

    from models.variants import downstream_clusters

    base = CLASSIFICATION_VARIANTS[backbone]
    return dataclasses.replace(base, num_classes=0, clusters=downstream_clusters(base, ADE20K_CLUSTERS))


def _build(backbone: str, head: str):
    from models.segmentation.segmentor import build_segmentor

    return build_segmentor(segmentation_backbone_config(backbone), head, num_classes=150)


def _register(head: str, prefix: str, backbones: dict[str, str], ignored: tuple[str, ...]) -> None:
    for backbone, checkpoint in backbones.items():
        description = f"ADE20k semantic segmentation, {head} head on {backbone} (logits at 1/4 resolution)"
        ablation = backbone.startswith("pacavit_small_p2cconv_") and backbone != "pacavit_small_p2cconv_100_0"
        register(ArchSpec(
            name=f"{prefix}_{backbone}",
            task="segmentation",
            factory=partial(_build, backbone, head),
            preprocess=ADE20K_SEGMENTATION,
            labels="ade20k150",
            checkpoint_files=(checkpoint,),
            ignored_checkpoint_prefixes=ignored,
            description=description,
            backbone=backbone,
            head=head,
            note=ABLATION_NOTE if ablation else "",
        ))


_register("paca", "pacahead", PACA_HEAD_BACKBONES, ())
_register("upernet", "upernet", UPERNET_BACKBONES, ("auxiliary_head.",))
