"""Training-only scene variations: more and harder scenes than the held-out ones, as the service sees them.

Held-out scenes are 128×128 PNG-exact canvases with 2–5 digits 16–56 px tall. Users post other sizes
(resized to fit 128×128, then padded) and JPEG files, so training scenes also come as non-square
canvases resized the service's way (Pillow bilinear, aspect kept), with 1–7 digits 12–60 px tall
whose shapes are varied by `data.distort_digit`, and a share of them pass through JPEG.
Every scene is a pure function of (seed, index); no torch here.
"""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from PIL import Image

from demo import data

TRAIN_DIGIT_HEIGHTS = (12, 60)
TRAIN_DIGIT_COUNTS = (1, 7)
NON_SQUARE_SHARE = 0.35
JPEG_SHARE = 0.3
_STREAM = 3  # random stream of the variation choices (data uses 0–2)


def fit_within(hw: tuple[int, int], bound: tuple[int, int]) -> tuple[int, int]:
    """The service's `keep_ratio_within` size: scale so both sides fit `bound`, rounded half up."""
    scale = min(max(bound) / max(hw), min(bound) / min(hw))
    return int(hw[0] * scale + 0.5), int(hw[1] * scale + 0.5)


def resize_scene(item: data.Scene, hw: tuple[int, int]) -> data.Scene:
    """The scene resized to `hw`: image by Pillow bilinear (as the service), masks by bilinear ≥ 0.5."""
    size = (hw[1], hw[0])
    image = np.array(Image.fromarray(item.image).resize(size, Image.Resampling.BILINEAR))
    masks, labels = [], []
    for mask, label in zip(item.masks, item.labels, strict=True):
        resized = Image.fromarray(mask.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR)
        kept = np.asarray(resized) >= 0.5
        if kept.sum() >= 4:
            masks.append(kept)
            labels.append(label)
    masks_array = np.stack(masks) if masks else np.zeros((0, *hw), dtype=bool)
    boxes = np.stack([data.mask_box(m) for m in masks]) if masks else np.zeros((0, 4), dtype=np.float32)
    return data.Scene(image, boxes, np.asarray(labels, dtype=np.int64), masks_array)


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


@cache
def _training_digits() -> tuple[np.ndarray, np.ndarray]:
    images, labels = data.load_mnist()
    indices = data.split_indices("train")
    return images[indices], labels[indices]


def training_scene(index: int, seed: int = 0, hw: tuple[int, int] = (128, 128)) -> data.Scene:
    """Training scene number `index`: training digits only, at most `hw` after resizing."""
    choices = np.random.default_rng((seed, 1, _STREAM, index))
    canvas = hw
    if choices.uniform() < NON_SQUARE_SHARE:
        long = int(choices.integers(129, 201))
        short = int(choices.integers(max(64, long // 2), 129))  # aspect ratio at most 2
        canvas = (short, long) if choices.uniform() < 0.5 else (long, short)
    pool, pool_labels = _training_digits()
    item = data.render_scene(
        pool, pool_labels, np.random.default_rng((seed, 1, 1, index)), canvas,
        digit_heights=TRAIN_DIGIT_HEIGHTS, digit_counts=TRAIN_DIGIT_COUNTS,
        distort_rng=np.random.default_rng((seed, 1, 2, index)),
    )
    target = fit_within(canvas, hw)
    if target != canvas:
        item = resize_scene(item, target)
    if choices.uniform() < JPEG_SHARE:
        item = data.Scene(jpeg_round_trip(item.image, int(choices.integers(60, 96))), item.boxes, item.labels,
                          item.masks)
    return item
