"""ADE20k semantic segmentation: PaCa segmentation head and UperNet on PaCa-ViT backbones.

Importing this package registers the archs; torch is imported only when a model is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from models.segmentation import archs as _archs  # noqa: F401  (registers the archs)

if TYPE_CHECKING:
    from models.config import PaCaConfig
    from models.segmentation.segmentor import Segmentor


def build_segmentor(backbone: PaCaConfig, head: str, num_classes: int = 150,
                    channels: int | None = None) -> Segmentor:
    """See `models.segmentation.segmentor.build_segmentor` (imported lazily to keep this package torch-free)."""
    from models.segmentation.segmentor import build_segmentor as _build_segmentor

    return _build_segmentor(backbone, head, num_classes, channels)  # type: ignore[arg-type]


__all__ = ["build_segmentor"]
