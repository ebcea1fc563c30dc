"""Distinct colours for class and cluster indices, so label maps and cluster maps can be looked at."""

from __future__ import annotations

import numpy as np
from PIL import Image

_BASE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
     [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255], [170, 110, 40],
     [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128]],
    dtype=np.uint8,
)


def distinct_colours(count: int) -> np.ndarray:
    """(count, 3) uint8 RGB: a fixed palette of 20 well-separated colours, then golden-ratio hues."""
    if count <= len(_BASE):
        return _BASE[:count]
    extra = count - len(_BASE)
    hues = (np.arange(extra) * 0.618033988749895) % 1.0
    hsv = np.stack([hues * 255, np.full(extra, 200), np.full(extra, 230)], axis=1).astype(np.uint8)
    rgb = np.asarray(Image.fromarray(hsv[None], mode="HSV").convert("RGB"))[0]
    return np.concatenate([_BASE, rgb])


def class_palette() -> list[int]:
    """A 256-entry PNG palette for class indices: index 0 black, the others distinct colours."""
    colours = np.concatenate([np.zeros((1, 3), np.uint8), distinct_colours(255)])
    return colours.reshape(-1).tolist()
