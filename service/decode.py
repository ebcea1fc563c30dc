"""Encoded bytes → an upright 8-bit RGB Pillow image, or a 4xx error that says what is wrong.

Handles EXIF orientation, grayscale (L/LA), palette (P, with transparency), RGBA (composited on white),
CMYK/YCbCr/LAB, 16-bit and 32-bit integer (I;16, I) and float (F) images. Decompression bombs and
oversized images are rejected before the pixels are decoded.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import BadRequest, PayloadTooLarge


def decode_image(data: bytes, *, max_pixels: int, what: str = "image") -> Image.Image:
    """Decode one encoded image; `what` names it in error messages (e.g. "image 2")."""
    if not data:
        raise BadRequest(f"{what} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"{what} is {width}×{height} = {width * height} pixels; the limit is {max_pixels}"
                )
            image.load()
    except PayloadTooLarge:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"{what} is too large to decode: {exc}") from None
    except UnidentifiedImageError:
        raise BadRequest(f"{what} is not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadRequest(f"{what} could not be decoded (truncated or corrupt): {exc}") from None
    if image.width < 1 or image.height < 1:
        raise BadRequest(f"{what} has no pixels")
    image = ImageOps.exif_transpose(image)
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB; transparent pixels become white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _wide_to_rgb(image)
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _wide_to_rgb(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale → 8 bits by the type's full range (16-bit: v / 257)."""
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = array.astype(np.float64) / 257.0
    elif image.mode == "I":
        scaled = array.astype(np.float64) / (257.0 if array.max(initial=0) > 255 else 1.0)
    else:  # "F": assume [0, 1] when it fits, else clip to [0, 255]
        scaled = array.astype(np.float64) * (255.0 if array.max(initial=0) <= 1.0 else 1.0)
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1))
