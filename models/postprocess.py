"""Model outputs → answers in the original image's pixels (numpy only, no torch): cross-team contract 2.

- `rescale_boxes`: boxes from the resized input frame back to original pixels (mmdet `rescale=True`).
- `paste_masks`: 28×28 RoI mask probabilities → full-image boolean masks, the mmdet way: bilinear
  sampling (align_corners=False, zero outside) at pixel centres relative to the exact float box, then
  `≥ threshold` (mmdet `FCNMaskHead`). torchvision's integer-box paste differs visibly on small boxes.
- `segmentation_label_map`: 1/4-resolution class logits → label map of the original image, the mmseg
  way: bilinear upsample to the model input, crop the padding, bilinear resize to the original, argmax.

Bilinear resampling is separable, so every resize here is a pair of small interpolation matrices
(one per axis) applied with matrix products; chaining resizes multiplies the matrices.
"""

from __future__ import annotations

import math

import numpy as np

TILE = 256  # output rows and columns per tile when building label maps: memory ≈ K × TILE² floats, any image size


def rescale_boxes(boxes: np.ndarray, scale_yx: tuple[float, float]) -> np.ndarray:
    """(K, 4) x1, y1, x2, y2 in the resized frame → original pixels (divide by the per-axis scale)."""
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (K, 4), got {boxes.shape}")
    scale_y, scale_x = scale_yx
    if scale_y <= 0 or scale_x <= 0:
        raise ValueError(f"scale_yx must be positive, got {scale_yx}")
    return boxes / np.array([scale_x, scale_y, scale_x, scale_y], dtype=np.float32)


def _sampling_matrix(coords: np.ndarray, size: int) -> np.ndarray:
    """Bilinear weights (len(coords), size) for sampling a length-`size` signal at continuous pixel
    coordinates `coords` (pixel i has its centre at i); samples outside the signal count as 0."""
    low = np.floor(coords)
    frac = coords - low
    low = low.astype(np.int64)
    weights = np.zeros((coords.shape[0], size), dtype=np.float64)
    rows = np.arange(coords.shape[0])
    for index, weight in ((low, 1.0 - frac), (low + 1, frac)):
        inside = (index >= 0) & (index < size)
        np.add.at(weights, (rows[inside], index[inside]), weight[inside])
    return weights


def paste_mask_windows(mask_probs: np.ndarray, boxes_original: np.ndarray, original_hw: tuple[int, int],
                       threshold: float = 0.5) -> list[tuple[int, int, np.ndarray]]:
    """(K, m, m) RoI mask probabilities + (K, 4) boxes in original pixels → per detection (top, left, window):
    the boolean mask inside the box's window (one pixel of margin); everything outside it is background.

    Pixel (y, x) samples the RoI mask at ((x + 0.5 − x1) / (x2 − x1)) · m − 0.5 (and likewise in y),
    bilinearly with zeros outside the mask — `grid_sample(align_corners=False)` of mmdet's
    `_do_paste_mask` — and is foreground where the sample is ≥ `threshold`. Pixels more than one pixel
    outside the box sample < 0.5·p ≤ threshold, so the window holds every foreground pixel while memory
    stays proportional to the box, not to the image.
    """
    mask_probs = np.asarray(mask_probs)
    boxes_original = np.asarray(boxes_original, dtype=np.float64)
    if mask_probs.ndim != 3:
        raise ValueError(f"mask_probs must have shape (K, m, m), got {mask_probs.shape}")
    if boxes_original.shape != (mask_probs.shape[0], 4):
        raise ValueError(f"boxes_original must have shape ({mask_probs.shape[0]}, 4), got {boxes_original.shape}")
    height, width = (int(v) for v in original_hw)
    mask_h, mask_w = mask_probs.shape[1:]
    windows = []
    for k, (x1, y1, x2, y2) in enumerate(boxes_original):
        col0, col1 = max(math.floor(x1) - 1, 0), min(math.ceil(x2) + 1, width)
        row0, row1 = max(math.floor(y1) - 1, 0), min(math.ceil(y2) + 1, height)
        if col1 <= col0 or row1 <= row0 or not (x2 > x1 and y2 > y1):
            windows.append((0, 0, np.zeros((0, 0), dtype=bool)))
            continue
        xs = (np.arange(col0, col1) + 0.5 - x1) / (x2 - x1) * mask_w - 0.5
        ys = (np.arange(row0, row1) + 0.5 - y1) / (y2 - y1) * mask_h - 0.5
        sampled = _sampling_matrix(ys, mask_h) @ mask_probs[k].astype(np.float64) @ _sampling_matrix(xs, mask_w).T
        windows.append((row0, col0, sampled >= threshold))
    return windows


def paste_masks(mask_probs: np.ndarray, boxes_original: np.ndarray, original_hw: tuple[int, int],
                threshold: float = 0.5) -> np.ndarray:
    """Full-image boolean masks (K, H, W) of `paste_mask_windows` (for evaluation; serving keeps windows)."""
    height, width = (int(v) for v in original_hw)
    out = np.zeros((len(boxes_original), height, width), dtype=bool)
    for k, (top, left, window) in enumerate(paste_mask_windows(mask_probs, boxes_original, original_hw, threshold)):
        out[k, top:top + window.shape[0], left:left + window.shape[1]] = window
    return out


def _resize_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out_size, in_size) weights of PyTorch bilinear resizing with align_corners=False."""
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    src = np.clip(src, 0.0, in_size - 1)  # PyTorch clamps at the borders (edge replication)
    low = np.floor(src).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    frac = src - low
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


def _band(matrix: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """A resampling matrix (out, in) with few, contiguous non-zeros per row → (indices, weights), both
    (out, width): applying it costs `width` multiply-adds per output instead of `in`."""
    nonzero = matrix != 0
    first = nonzero.argmax(axis=1)
    last = matrix.shape[1] - 1 - nonzero[:, ::-1].argmax(axis=1)
    width = int((last - first).max()) + 1
    index = np.minimum(first, matrix.shape[1] - width)[:, None] + np.arange(width)
    return index, np.take_along_axis(matrix, index, axis=1).astype(dtype)


def _default_input_hw(logits_hw: tuple[int, int], resized_hw: tuple[int, int]) -> tuple[int, int]:
    """The model input size behind stride-4 logits: the resized size when nothing was padded beyond it,
    else 4·(h, w) (inputs padded to a multiple of 4 or more)."""
    if all(math.ceil(r / 4) == n for r, n in zip(resized_hw, logits_hw, strict=True)):
        return resized_hw
    return (4 * logits_hw[0], 4 * logits_hw[1])


def segmentation_label_map(seg_logits: np.ndarray, resized_hw: tuple[int, int], original_hw: tuple[int, int],
                           input_hw: tuple[int, int] | None = None) -> np.ndarray:
    """(K, h, w) logits at 1/4 of the model input → (H, W) class indices of the original image (uint8 up to 256
    classes, else uint16).

    Steps (mmseg `predict` + `postprocess_result`): bilinear upsample to the model input size
    `input_hw` (default: see `_default_input_hw`), crop to the unpadded `resized_hw` (padding is
    bottom/right), bilinear resize to `original_hw`, argmax over K. Each step is linear per axis, so
    the three are folded into one banded matrix per axis (a few taps per output pixel) and applied tile by
    tile, so memory does not grow with the image.
    """
    seg_logits = np.asarray(seg_logits)
    if seg_logits.ndim != 3:
        raise ValueError(f"seg_logits must have shape (K, h, w), got {seg_logits.shape}")
    logits_hw = seg_logits.shape[1:]
    resized_hw = (int(resized_hw[0]), int(resized_hw[1]))
    input_hw = _default_input_hw(logits_hw, resized_hw) if input_hw is None else input_hw
    if resized_hw[0] > input_hw[0] or resized_hw[1] > input_hw[1]:
        raise ValueError(f"resized_hw {resized_hw} is larger than the model input {input_hw}")
    per_axis = [
        _resize_matrix(orig, res) @ _resize_matrix(inp, logit)[:res]
        for orig, res, inp, logit in zip(original_hw, resized_hw, input_hw, logits_hw, strict=True)
    ]
    dtype = np.result_type(seg_logits.dtype, np.float32)  # float32 logits are resampled in float32, like mmseg
    row_index, row_weights = _band(per_axis[0], dtype)  # (H, a)
    col_index, col_weights = _band(per_axis[1], dtype)  # (W, b)
    logits = np.ascontiguousarray(seg_logits.astype(dtype, copy=False).transpose(1, 2, 0))  # (h, w, K)
    classes = logits.shape[-1]
    label_map = np.empty(tuple(int(v) for v in original_hw), dtype=label_dtype(classes))
    # Classes last keeps every gather and the argmax on contiguous K-vectors. Output tiles of TILE × TILE
    # pixels: columns resampled first for just the source rows the tile reads, then rows, then argmax.
    for row_start in range(0, label_map.shape[0], TILE):
        rows = slice(row_start, row_start + TILE)
        first, last = int(row_index[rows].min()), int(row_index[rows].max()) + 1
        for col_start in range(0, label_map.shape[1], TILE):
            cols = slice(col_start, col_start + TILE)
            by_columns = sum(logits[first:last, col_index[cols, b]] * col_weights[cols, b, None]
                             for b in range(col_index.shape[1]))  # (source rows, tile W, K)
            block = sum(by_columns[row_index[rows, a] - first] * row_weights[rows, a, None, None]
                        for a in range(row_index.shape[1]))  # (tile H, tile W, K)
            label_map[rows, cols] = block.argmax(axis=-1)
    return label_map


def label_dtype(classes: int) -> np.dtype:
    """The smallest unsigned integer type that holds class indices 0 … classes − 1."""
    return np.dtype(np.uint8 if classes <= 256 else np.uint16 if classes <= 65536 else np.uint32)
