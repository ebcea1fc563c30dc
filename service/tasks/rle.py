"""COCO run-length encoding (pycocotools' compressed RLE) of masks, built from runs — never from full-image masks.

A detection's mask is a window around its box and a segmentation is one label map; both are turned into the
foreground runs of the column-major image directly, so encoding costs memory in proportion to the window
or the label map, not K × H × W.
"""

from __future__ import annotations

import numpy as np

from service.api.schemas import RLE


def rle_from_runs(starts: np.ndarray, lengths: np.ndarray, height: int, width: int) -> RLE:
    """The compressed RLE of a mask whose foreground is the given runs of the column-major pixel order
    (sorted, non-overlapping)."""
    from pycocotools import mask as mask_utils

    total = height * width
    if len(starts) == 0:
        counts = [total]
    else:
        ends = starts + lengths
        pairs = np.empty(2 * len(starts) + 1, dtype=np.int64)
        pairs[0:-1:2] = starts - np.concatenate(([0], ends[:-1]))  # background before each run
        pairs[1::2] = lengths
        pairs[-1] = total - ends[-1]
        counts = pairs[:-1].tolist() if pairs[-1] == 0 else pairs.tolist()  # no trailing empty run
    encoded = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return RLE(size=[height, width], counts=encoded["counts"].decode("ascii"))


def runs_of(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted pixel positions → (run starts, run lengths)."""
    if positions.size == 0:
        return positions, positions
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = positions[np.concatenate(([0], breaks))]
    lengths = np.diff(np.concatenate(([0], breaks, [positions.size])))
    return starts, lengths


def window_rle(top: int, left: int, window: np.ndarray, height: int, width: int) -> RLE:
    """RLE of an image that is background except `window` (bool) placed at (top, left)."""
    cols, rows = np.nonzero(window.T)  # column-major: by column, then row
    positions = (left + cols).astype(np.int64) * height + (top + rows)
    return rle_from_runs(*runs_of(positions), height, width)


def label_map_rles(label_map: np.ndarray) -> list[tuple[int, int, RLE]]:
    """(class index, area, RLE) of every class present in a label map, in class order."""
    height, width = label_map.shape
    flat = np.ascontiguousarray(label_map.T).reshape(-1)  # column-major pixel order
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    run_starts = np.concatenate(([0], change))
    run_lengths = np.diff(np.concatenate((run_starts, [flat.size])))
    run_values = flat[run_starts]
    order = np.argsort(run_values, kind="stable")  # runs grouped by class, each group still in pixel order
    classes, first = np.unique(run_values[order], return_index=True)
    bounds = np.concatenate((first, [order.size]))
    results = []
    for index, start, stop in zip(classes, bounds[:-1], bounds[1:], strict=True):
        chosen = order[start:stop]
        lengths = run_lengths[chosen]
        results.append((int(index), int(lengths.sum()), rle_from_runs(run_starts[chosen], lengths, height, width)))
    return results
