"""Image decoding (service.decode): every mode becomes upright 8-bit RGB; bad or oversized input is a 4xx."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.decode import decode_image
from service.errors import BadRequest, PayloadTooLarge

LIMIT = 10_000_000


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _picture() -> Image.Image:
    y, x = np.mgrid[0:30, 0:40]
    return Image.fromarray(np.stack([x * 6, y * 8, (x + y) * 3], axis=-1).astype(np.uint8))


def test_exif_orientation_is_applied() -> None:
    picture = _picture()
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90° counter-clockwise to display": stored rotated the other way
    stored = picture.transpose(Image.Transpose.ROTATE_270)
    decoded = decode_image(_encode(stored, "PNG", exif=exif), max_pixels=LIMIT)
    assert decoded.size == picture.size
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(picture))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_8bit_rgb(mode: str) -> None:
    picture = _picture()
    if mode == "I;16":
        image = Image.fromarray(np.asarray(picture.convert("L")).astype(np.uint16) * 257)
    elif mode == "I":
        image = Image.fromarray(np.asarray(picture.convert("L")).astype(np.int32) * 257)
    elif mode == "F":
        image = Image.fromarray(np.asarray(picture.convert("L")).astype(np.float32) / 255.0)
    elif mode == "PA":
        image = picture.convert("P").convert("PA")
    else:
        image = picture.convert(mode)
    fmt = "TIFF" if mode in ("I", "F", "CMYK", "PA") else "PNG"
    decoded = decode_image(_encode(image, fmt), max_pixels=LIMIT)
    assert decoded.mode == "RGB" and decoded.size == picture.size
    if mode in ("L", "I;16", "I", "F"):
        gray = np.asarray(picture.convert("L")).astype(int)
        assert np.abs(np.asarray(decoded)[..., 0].astype(int) - gray).max() <= 1


def test_transparent_pixels_become_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    decoded = decode_image(_encode(rgba, "PNG"), max_pixels=LIMIT)
    assert np.asarray(decoded)[0, 0].tolist() == [255, 255, 255]


def test_bad_and_oversized_images_raise_client_errors() -> None:
    with pytest.raises(BadRequest, match="not a recognised image"):
        decode_image(b"GIF89a?? definitely not", max_pixels=LIMIT)
    with pytest.raises(BadRequest, match="truncated or corrupt"):
        decode_image(_encode(_picture(), "JPEG")[:300], max_pixels=LIMIT)
    with pytest.raises(BadRequest, match="empty"):
        decode_image(b"", max_pixels=LIMIT)
    with pytest.raises(PayloadTooLarge, match="40×30"):
        decode_image(_encode(_picture(), "PNG"), max_pixels=1000)
