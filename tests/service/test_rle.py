"""Masks as COCO RLE built from runs (service.tasks.rle) equal pycocotools' encoding of the full masks."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from service.tasks.rle import label_map_rles, window_rle


def _reference(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)[:, :, None]))[0]["counts"].decode("ascii")


def test_window_rle_equals_the_full_mask_encoding() -> None:
    rng = np.random.default_rng(0)
    height, width = 37, 53
    for top, left, h, w in [(0, 0, 5, 7), (30, 40, 7, 13), (3, 50, 20, 3), (10, 10, 1, 1), (0, 0, 37, 53)]:
        window = rng.random((h, w)) > 0.4
        full = np.zeros((height, width), dtype=bool)
        full[top:top + h, left:left + w] = window
        rle = window_rle(top, left, window, height, width)
        assert rle.size == [height, width] and rle.counts == _reference(full)
        assert mask_utils.decode({"size": rle.size, "counts": rle.counts.encode()}).astype(bool).tolist() == \
            full.tolist()
    assert window_rle(0, 0, np.zeros((0, 0), bool), 4, 5).counts == _reference(np.zeros((4, 5), bool))


def test_label_map_rles_equal_per_class_encodings_and_areas() -> None:
    rng = np.random.default_rng(1)
    label_map = rng.integers(0, 5, size=(41, 29)).astype(np.uint8)
    label_map[:, :10] = 3  # long runs across columns
    label_map[label_map == 1] = 4  # a class that never appears
    found = label_map_rles(label_map)
    assert [index for index, _, _ in found] == [0, 2, 3, 4]
    for index, area, rle in found:
        mask = label_map == index
        assert area == int(mask.sum()) and rle.counts == _reference(mask)
