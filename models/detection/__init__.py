"""COCO detection + instance segmentation: torchvision Mask R-CNN on PaCa-ViT, mmdet test-time behaviour.

Importing this package registers the archs; torch/torchvision are imported only when a model is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.detection import archs as _archs  # noqa: F401  (registers the archs)

if TYPE_CHECKING:
    from models.config import PaCaConfig
    from models.detection.mask_rcnn import PaCaMaskRCNN


def build_mask_rcnn(backbone: PaCaConfig, num_classes: int = 80, fpn_channels: int = 256,
                    **overrides: Any) -> PaCaMaskRCNN:
    """See `models.detection.mask_rcnn.build_mask_rcnn` (imported lazily to keep this package torch-free)."""
    from models.detection.mask_rcnn import build_mask_rcnn as _build_mask_rcnn

    return _build_mask_rcnn(backbone, num_classes, fpn_channels, **overrides)


__all__ = ["build_mask_rcnn"]
