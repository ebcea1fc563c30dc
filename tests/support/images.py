"""Real image files for the tests, drawn with Pillow: varied sizes, aspect ratios, modes and formats."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def scene(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """An RGB picture (width, height) with a gradient background, shapes and noise; `seed` makes it unique."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 255, size=3)
    pixels = np.stack([(base[0] + x * 255 // width) % 256, (base[1] + y * 255 // height) % 256,
                       np.full_like(x, base[2])], axis=-1).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, width - 10)), int(rng.integers(0, height - 10))
        x1, y1 = x0 + int(rng.integers(8, max(9, width // 2))), y0 + int(rng.integers(8, max(9, height // 2)))
        colour = tuple(int(c) for c in rng.integers(0, 255, size=3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    noise = rng.normal(0, 6, size=(height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    return encode(scene(seed, size), "JPEG", quality=92)


def png(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    return encode(scene(seed, size), "PNG")
