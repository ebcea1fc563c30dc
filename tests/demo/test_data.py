"""Demo data: real MNIST digits, a fixed disjoint split, deterministic rendering, exact boxes and masks."""

from __future__ import annotations

import numpy as np
import pytest

from demo import data


def test_mnist_subset_is_the_real_5000_digit_set():
    images, labels = data.load_mnist()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and (images > 0).mean() > 0.1  # real strokes, not blank


def test_split_is_disjoint_stratified_and_fixed():
    _, labels = data.load_mnist()
    train, heldout = data.split_indices("train"), data.split_indices("heldout")
    assert len(train) == 4000 and len(heldout) == 1000
    assert not set(train.tolist()) & set(heldout.tolist())
    assert np.bincount(labels[heldout]).tolist() == [100] * 10


def test_digit_rendering_is_deterministic_by_seed():
    images, _ = data.load_mnist()
    first = data.render_digit(images[7], np.random.default_rng(3))
    again = data.render_digit(images[7], np.random.default_rng(3))
    other = data.render_digit(images[7], np.random.default_rng(4))
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 5  # new colours, not a copy


@pytest.mark.parametrize("index", range(12))
def test_scene_boxes_are_the_tight_extent_of_disjoint_masks(index):
    item = data.scene("heldout", index)
    assert item.image.shape == (128, 128, 3)
    assert 1 <= len(item.labels) <= 5 and len(item.boxes) == len(item.masks) == len(item.labels)
    assert item.masks.sum(axis=0).max() <= 1  # instances never overlap
    for box, mask in zip(item.boxes, item.masks, strict=True):
        ys, xs = np.nonzero(mask)
        np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    semantic = item.semantic_map()
    for label, mask in zip(item.labels, item.masks, strict=True):
        assert (semantic[mask] == label + 1).all()
    assert (semantic[~item.masks.any(axis=0)] == 0).all()


def test_scenes_are_reproducible_and_split_specific():
    a, b = data.scene("train", 5, seed=1), data.scene("train", 5, seed=1)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.image, data.scene("heldout", 5, seed=1).image)
    assert not np.array_equal(a.image, data.scene("train", 5, seed=2).image)


def test_digits_are_visible_against_their_background():
    """Ink pixels differ clearly from the surrounding background (the task is solvable, not trivial)."""
    item = data.scene("heldout", 0)
    image = item.image.astype(float)
    for mask in item.masks:
        ink = image[mask].mean(axis=0)
        rows, cols = np.nonzero(mask)
        ring = np.zeros_like(mask)
        ring[max(rows.min() - 3, 0) : rows.max() + 4, max(cols.min() - 3, 0) : cols.max() + 4] = True
        ring &= ~item.masks.any(axis=0)
        assert np.abs(ink - image[ring].mean(axis=0)).max() > 30
