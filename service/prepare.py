"""Decode → preprocess: an encoded image becomes the model input the batcher queues (one sample).

The preprocessing is the artifact's own (`paca.preprocess`, applied by `models.preprocess`), so the
server feeds a model exactly what export and evaluation fed it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from export.metadata import ArtifactMetadata
from models.preprocess import ImageMeta, preprocess_image
from service.decode import decode_image
from service.timing import Interval


@dataclass
class PreparedImage:
    """One decoded image and its model input (batch dimension of 1), with the geometry to map outputs back."""

    image: Image.Image
    pixel_values: np.ndarray  # (1, 3, H, W) float32
    meta: ImageMeta
    intervals: list[Interval] = field(default_factory=list)  # when it was decoded and preprocessed


def prepare_image(data: bytes, info: ArtifactMetadata, *, max_pixels: int, what: str = "image") -> PreparedImage:
    """Decode `data` (4xx on anything that is not a usable image) and preprocess it for the model."""
    started = time.time_ns()
    image = decode_image(data, max_pixels=max_pixels, what=what)
    decoded = time.time_ns()
    prepared = prepare_decoded(image, info)
    prepared.intervals = [("decode", started, decoded), ("preprocess", decoded, time.time_ns())]
    return prepared


def prepare_decoded(image: Image.Image, info: ArtifactMetadata) -> PreparedImage:
    array, meta = preprocess_image(image, info.preprocess)
    return PreparedImage(image=image, pixel_values=np.ascontiguousarray(array[None], dtype=np.float32), meta=meta)


def synthetic_image(height: int, width: int) -> Image.Image:
    """A smooth colour gradient: warm-up input that detectors can find box-like structure in (zeros would not)."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                       ((x + y) * 127 // max(width + height - 2, 1))], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)
