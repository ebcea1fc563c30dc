"""Cluster counts read from a checkpoint, for ADE20k ablation files that may be trained with other counts.

The registered archs build the configs' 200-cluster override. The README sizes of the ablation
segmentors suggest other counts, and the row count of a checkpoint's clustering layers is the only
reliable source. Torch-free: only tensor `.shape` is read.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from models.config import PaCaConfig

_CONV_OR_MLP = re.compile(r"stage(\d)\.\d+\.attn\.clustering\.clustering\.(\d)\.weight$")
_TEACHER = re.compile(r"paca_teacher\.to_clusters(\d)\.weight$")


def checkpoint_clusters(state_dict: Mapping[str, Any], clustering: str, prefix: str = "backbone.") -> tuple[int, ...]:
    """Per-stage cluster counts (0 = none): rows of each stage's last clustering layer
    (conv: `clustering.4`, mlp: `clustering.2`, teacher: `to_clusters{i}`)."""
    last_layer = "4" if clustering == "conv" else "2"
    counts = [0, 0, 0, 0]
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        match = _CONV_OR_MLP.match(name)
        if match is None or match.group(2) != last_layer:
            match = _TEACHER.match(name)
        if match:
            counts[int(match.group(1)) - 1] = int(value.shape[0])
    return tuple(counts)


def config_for_checkpoint(config: PaCaConfig, state_dict: Mapping[str, Any], prefix: str = "backbone.") -> PaCaConfig:
    """`config` with the cluster counts found in `state_dict` (unchanged when it holds no clustering layers)."""
    counts = checkpoint_clusters(state_dict, config.clustering, prefix)
    return config if not any(counts) else dataclasses.replace(config, clusters=counts)


def build_segmentor_for_checkpoint(arch: str, state_dict: Mapping[str, Any]):
    """The segmentor of a registered `pacahead_*` / `upernet_*` arch, with its backbone's cluster counts
    taken from `state_dict` (mmseg layout). Load the weights afterwards with the usual strict loader."""
    from models.registry import get_arch
    from models.segmentation.archs import segmentation_backbone_config
    from models.segmentation.segmentor import build_segmentor

    spec = get_arch(arch)
    if spec.backbone is None or spec.head is None:
        raise ValueError(f"{arch!r} is not an ADE20k segmentation arch")
    base = segmentation_backbone_config(spec.backbone)
    return build_segmentor(config_for_checkpoint(base, state_dict), spec.head, num_classes=150)
