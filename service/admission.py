"""Admission control: what a request will cost, checked against the limits before any image is decoded.

Image headers are peeked (Pillow reads the size without decoding pixels), so a request the limits do not
admit is refused in milliseconds: per image its pixel count and aspect ratio, per request the number of
images, their total pixels and the estimated working memory, and server-wide the memory of every
request in progress (`MemoryBudget`, 503 when spent).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from models.preprocess import input_size
from models.preprocess_spec import PreprocessSpec
from service.errors import BadRequest, Overloaded, PayloadTooLarge
from service.settings import ServerSettings

MIB = 1 << 20


@dataclass(frozen=True)
class ImageHeader:
    width: int
    height: int


def peek_image(data: bytes, *, what: str, max_pixels: int, max_aspect_ratio: float) -> ImageHeader:
    """The image's size from its header (no pixels decoded); 4xx for what cannot or must not be decoded."""
    if not data:
        raise BadRequest(f"{what} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"{what} is too large to decode: {exc}") from None
    except UnidentifiedImageError:
        raise BadRequest(f"{what} is not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadRequest(f"{what} could not be read (truncated or corrupt): {exc}") from None
    if width < 1 or height < 1:
        raise BadRequest(f"{what} has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise PayloadTooLarge(f"{what} is {width}×{height} = {width * height} pixels; the limit is {max_pixels}")
    ratio = max(width, height) / min(width, height)
    if ratio > max_aspect_ratio:
        raise BadRequest(f"{what} is {width}×{height}: its aspect ratio {ratio:.0f}:1 is beyond the limit of "
                         f"{max_aspect_ratio:g}:1")
    return ImageHeader(width, height)


def image_cost_bytes(header: ImageHeader, spec: PreprocessSpec) -> int:
    """Working memory one image needs on the request line: the decoded RGB image and a converted copy
    (3 + 3 bytes per pixel), the answer at the original size (a label map or mask windows and their
    runs, 2 bytes per pixel), and the model input (float32 CHW plus the resized RGB, 15 bytes per pixel)."""
    pixels = header.width * header.height
    resized_hw, input_hw = input_size((header.height, header.width), spec)
    return 8 * pixels + 3 * resized_hw[0] * resized_hw[1] + 12 * input_hw[0] * input_hw[1]


def admit_images(images: Sequence[bytes], spec: PreprocessSpec, settings: ServerSettings,
                 names: Sequence[str]) -> int:
    """Check a request's images against every per-image and per-request limit; returns its cost in bytes."""
    if len(images) > settings.max_images_per_request:
        raise BadRequest(f"{len(images)} images in one request; the limit is {settings.max_images_per_request}")
    headers = [peek_image(data, what=name, max_pixels=settings.max_image_pixels,
                          max_aspect_ratio=settings.max_aspect_ratio) for data, name in zip(images, names, strict=True)]
    pixels = sum(h.width * h.height for h in headers)
    if pixels > settings.max_request_pixels:
        raise PayloadTooLarge(f"the request's images have {pixels} pixels together; the limit is "
                              f"{settings.max_request_pixels}")
    cost = sum(image_cost_bytes(h, spec) for h in headers)
    if cost > settings.max_request_memory_mb * MIB:
        raise PayloadTooLarge(f"the request would need about {cost / MIB:.0f} MiB to process; the limit is "
                              f"{settings.max_request_memory_mb} MiB (send fewer or smaller images)")
    return cost


class MemoryBudget:
    """The estimated memory of all requests in progress, bounded; one per server, used on the event loop."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.used = 0

    def acquire(self, cost: int) -> int:
        if self.used + cost > self.limit:
            raise Overloaded(f"the server is at its memory budget ({self.used / MIB:.0f} of {self.limit / MIB:.0f} "
                             f"MiB in use by requests in progress); retry shortly")
        self.used += cost
        return cost

    def release(self, cost: int) -> None:
        self.used = max(self.used - cost, 0)
