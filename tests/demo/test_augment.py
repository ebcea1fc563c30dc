"""Training-only variations: new handwriting, more and harder scenes; the held-out data stays as it was."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from demo import augment, data, evaluate

# sha256 of the first 20 held-out scenes (images and masks) and of all held-out digit images + labels.
# The documented figures are measured on exactly these; a change to rendering must not move them silently.
HELDOUT_SCENES_SHA256 = "16260fe398344eaa668b4106cca5af387e9e335ce73a3065ebc88ad56ed8d9a0"
HELDOUT_DIGITS_SHA256 = "af1a033ee79ea19e8375e748b9cefcc180a604ded3328019d64f82c2f646bf77"


def test_heldout_data_is_unchanged_by_the_training_variations():
    scenes = hashlib.sha256()
    for item in evaluate.heldout_scenes(20):
        scenes.update(item.image.tobytes())
        scenes.update(item.masks.tobytes())
    assert scenes.hexdigest() == HELDOUT_SCENES_SHA256
    images, labels = evaluate.heldout_digits()
    assert hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest() == HELDOUT_DIGITS_SHA256


def test_distorted_digit_is_a_different_drawing_of_the_same_ink():
    digits, _ = data.load_mnist()
    digit = digits[11]
    first = data.distort_digit(digit, np.random.default_rng(5))
    np.testing.assert_array_equal(first, data.distort_digit(digit, np.random.default_rng(5)))
    other = data.distort_digit(digit, np.random.default_rng(6))
    assert first.dtype == np.uint8 and first.shape[0] == first.shape[1] > digit.shape[0]  # padded, not cropped
    assert not np.array_equal(first, other)
    ink, ink_first = (digit > 127).sum(), (first > 127).sum()
    assert 0.5 * ink < ink_first < 2.5 * ink  # still a pen stroke of similar weight


def test_distorted_training_digits_keep_their_backgrounds():
    """Distortion draws from its own stream: the backgrounds (drawn first) equal the plain rendering's."""
    plain, labels = data.digit_images("train", seed=3)
    distorted, same_labels = data.digit_images("train", seed=3, distort=True)
    np.testing.assert_array_equal(labels, same_labels)
    assert not np.array_equal(plain, distorted)
    same_corner = (plain[:, 0, 0] == distorted[:, 0, 0]).all(axis=1)
    assert same_corner.mean() > 0.9  # corners are background unless a digit reaches them


@pytest.mark.parametrize("index", range(24))
def test_training_scenes_fit_the_model_input_with_exact_targets(index):
    item = augment.training_scene(index, seed=0)
    height, width = item.image.shape[:2]
    assert max(height, width) == 128 and min(height, width) >= 64
    assert len(item.labels) <= augment.TRAIN_DIGIT_COUNTS[1]
    assert item.masks.shape == (len(item.labels), height, width)
    assert item.masks.sum(axis=0).max(initial=0) <= 1
    for box, mask in zip(item.boxes, item.masks, strict=True):
        ys, xs = np.nonzero(mask)
        np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    np.testing.assert_array_equal(item.image, augment.training_scene(index, seed=0).image)


def test_training_scenes_include_resized_and_jpeg_ones():
    shapes = {augment.training_scene(i).image.shape[:2] for i in range(40)}
    assert (128, 128) in shapes and len(shapes) > 5


def test_resize_scene_matches_the_service_size_rule():
    from models.demo.archs import SCENE_PREPROCESS
    from models.preprocess import resized_size

    for hw in ((96, 160), (160, 96), (77, 129), (200, 100)):
        assert augment.fit_within(hw, (128, 128)) == resized_size(hw, SCENE_PREPROCESS)
    item = data.scene("train", 3, hw=(96, 160))
    resized = augment.resize_scene(item, augment.fit_within((96, 160), (128, 128)))
    assert resized.image.shape == (77, 128, 3)
    assert len(resized.labels) == len(item.labels)
    np.testing.assert_allclose(resized.boxes, item.boxes * 0.8, atol=1.5)
