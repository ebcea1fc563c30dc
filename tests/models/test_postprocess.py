"""models.postprocess against independent torch references (grid_sample, F.interpolate) in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.postprocess import paste_masks, rescale_boxes, segmentation_label_map


def _mmdet_paste_reference(masks: torch.Tensor, boxes: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """The mmdet rule written with grid_sample over the whole image (float64): sample at pixel centres,
    normalised to [-1, 1] across the exact float box, bilinear, align_corners=False, zeros outside."""
    height, width = hw
    x1, y1, x2, y2 = boxes.double().unbind(1)
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    gy = (ys[None] - y1[:, None]) / (y2 - y1)[:, None] * 2 - 1  # (K, H)
    gx = (xs[None] - x1[:, None]) / (x2 - x1)[:, None] * 2 - 1  # (K, W)
    grid = torch.stack([gx[:, None, :].expand(-1, height, -1), gy[:, :, None].expand(-1, -1, width)], dim=3)
    pasted = F.grid_sample(masks.double()[:, None], grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    return pasted[:, 0] >= 0.5


def _random_boxes(rng: np.random.Generator, count: int, hw: tuple[int, int]) -> np.ndarray:
    height, width = hw
    x1 = rng.uniform(-10, width - 4, count)
    y1 = rng.uniform(-10, height - 4, count)
    w = rng.uniform(0.7, 70, count)
    h = rng.uniform(0.7, 70, count)
    return np.stack([x1, y1, x1 + w, y1 + h], axis=1)


def test_paste_masks_matches_grid_sample_reference_on_random_boxes() -> None:
    rng = np.random.default_rng(0)
    hw = (61, 83)
    boxes = _random_boxes(rng, 40, hw)
    # Smooth, confident masks (blobs) plus a few pure-noise ones.
    yy, xx = np.mgrid[0:28, 0:28]
    centres = rng.uniform(5, 23, (40, 2))
    probs = 1 / (1 + np.exp(-(6 - np.hypot(yy[None] - centres[:, :1, None], xx[None] - centres[:, 1:, None]))))
    probs[::7] = rng.uniform(0, 1, (len(probs[::7]), 28, 28))
    ours = paste_masks(probs.astype(np.float32), boxes, hw)
    reference = _mmdet_paste_reference(torch.from_numpy(probs.astype(np.float32)), torch.from_numpy(boxes), hw)
    assert ours.dtype == bool and ours.shape == (40, *hw)
    assert ours.sum() > 1000  # the comparison is not between empty masks
    np.testing.assert_array_equal(ours, reference.numpy())


def test_paste_masks_threshold_is_inclusive_and_degenerate_boxes_are_empty() -> None:
    probs = np.full((2, 28, 28), 0.5, dtype=np.float32)
    boxes = np.array([[2.0, 3.0, 10.0, 9.0], [5.0, 5.0, 5.0, 12.0]])  # second: zero width
    masks = paste_masks(probs, boxes, (16, 16))
    assert masks[0, 3:9, 2:10].all()  # 0.5 ≥ 0.5 inside the box
    assert masks[0].sum() == 6 * 8
    assert not masks[1].any()


def test_paste_masks_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="boxes_original"):
        paste_masks(np.zeros((2, 28, 28)), np.zeros((3, 4)), (10, 10))


def test_rescale_boxes_divides_by_per_axis_scale() -> None:
    boxes = np.array([[10.0, 20.0, 30.0, 40.0]])
    np.testing.assert_allclose(rescale_boxes(boxes, (2.0, 0.5)), [[20.0, 10.0, 60.0, 20.0]])
    with pytest.raises(ValueError):
        rescale_boxes(boxes, (0.0, 1.0))


def _label_map_reference(logits: torch.Tensor, input_hw, resized_hw, original_hw) -> np.ndarray:
    up = F.interpolate(logits.double()[None], size=input_hw, mode="bilinear", align_corners=False)
    cropped = up[:, :, : resized_hw[0], : resized_hw[1]]
    final = F.interpolate(cropped, size=original_hw, mode="bilinear", align_corners=False)
    return final[0].argmax(0).numpy()


@pytest.mark.parametrize(
    ("input_hw", "resized_hw", "original_hw"),
    [
        ((64, 96), (64, 96), (100, 150)),     # no padding, upscaled original
        ((62, 93), (62, 93), (31, 47)),       # size not a multiple of 4, downscaled original
        ((96, 128), (80, 121), (333, 500)),   # padded to 32, large original (several tiles both ways)
    ],
)
def test_segmentation_label_map_matches_interpolate_chain(input_hw, resized_hw, original_hw) -> None:
    g = torch.Generator().manual_seed(5)
    logits_hw = (-(-input_hw[0] // 4), -(-input_hw[1] // 4))
    logits = torch.randn(7, *logits_hw, generator=g, dtype=torch.float64) * 3
    reference = _label_map_reference(logits, input_hw, resized_hw, original_hw)
    ours = segmentation_label_map(logits.numpy().astype(np.float32), resized_hw, original_hw, input_hw=input_hw)
    ours_default = segmentation_label_map(logits.numpy(), resized_hw, original_hw)
    assert ours.shape == original_hw and ours.dtype == np.uint8  # 7 classes: the smallest type that holds them
    assert len(np.unique(reference)) == 7
    # float32 logits vs the float64 reference: at most a handful of near-tie pixels may differ.
    assert (ours != reference).mean() < 1e-3
    np.testing.assert_array_equal(ours_default, reference)
