"""COCO run-length encoding of boolean masks (pycocotools): the mask format detect and segment return."""

from __future__ import annotations

import numpy as np

from service.api.schemas import RLE


def encode_rle(masks: np.ndarray) -> list[RLE]:
    """COCO RLE (column-major) of boolean masks (K, H, W); counts as a UTF-8 string."""
    from pycocotools import mask as mask_utils

    if masks.shape[0] == 0:
        return []
    encoded = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [RLE(size=[int(r["size"][0]), int(r["size"][1])], counts=r["counts"].decode("ascii")) for r in encoded]
