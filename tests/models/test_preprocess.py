"""Preprocessing against independent references: torchvision's transforms (timm's eval pipeline) on real
photos and generated images, and mmdet's resize sizes (mmcv `rescale_size`: new side = int(side·s + 0.5))."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models.preprocess import ImageMeta, preprocess_image, resized_size
from models.preprocess_spec import (
    ADE20K_SEGMENTATION,
    COCO_DETECTION,
    IMAGENET_CLASSIFICATION,
    PreprocessSpec,
)

skimage_data = pytest.importorskip("skimage.data")
transforms = pytest.importorskip("torchvision.transforms")

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage_data, name)())


def generated(height: int, width: int, seed: int = 0) -> Image.Image:
    """Smooth colour gradients plus noise: real edges and texture for the resampling filters."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([255 * yy / max(height - 1, 1), 255 * xx / max(width - 1, 1), 128 + 0 * xx], axis=-1)
    pixels = np.clip(base + rng.normal(0, 40, size=base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def timm_eval_transform(mean_std: bool = True):
    """timm's eval transform for crop_pct 0.9 at 224 (bicubic, short side 248), built from torchvision."""
    steps = [transforms.Resize(248, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(224)]
    if mean_std:
        steps += [transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    return transforms.Compose(steps)


# (H, W): landscape, portrait, upscaling, already at the short side, and 496×498 → 248×249, whose
# crop offset (249 − 224) / 2 = 12.5 rounds half to even (12), unlike int(x + 0.5).
GENERATED_SIZES = [(300, 451), (451, 300), (100, 80), (248, 249), (496, 498), (333, 250), (1, 1)]


@pytest.mark.parametrize("source", [*PHOTOS, *(f"{h}x{w}" for h, w in GENERATED_SIZES)])
def test_classification_matches_timm_eval_transform(source: str) -> None:
    if "x" in source:
        height, width = map(int, source.split("x"))
        image = generated(height, width)
    else:
        image = photo(source)
    ours, meta = preprocess_image(image, IMAGENET_CLASSIFICATION)
    reference = timm_eval_transform()(image).numpy()
    assert ours.dtype == np.float32 and ours.shape == (3, 224, 224) and meta.input_hw == (224, 224)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)

    # The resampled pixels themselves are bit-identical (identity normalisation exposes them).
    identity = PreprocessSpec("short_side_center_crop", (224, 224), resize_short=248, interpolation="bicubic",
                              mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    raw, _ = preprocess_image(image, identity)
    expected_pixels = np.asarray(timm_eval_transform(mean_std=False)(image)).transpose(2, 0, 1)
    np.testing.assert_array_equal(raw, expected_pixels.astype(np.float32))


def test_classification_geometry_of_a_real_photo() -> None:
    _, meta = preprocess_image(photo("chelsea"), IMAGENET_CLASSIFICATION)  # 300×451
    assert meta == ImageMeta(original_hw=(300, 451), resized_hw=(248, 372), scale_yx=(248 / 300, 372 / 451),
                             crop_offset_yx=(12, 74), input_hw=(224, 224))


def test_half_pixel_crop_offset_rounds_half_to_even() -> None:
    _, meta = preprocess_image(generated(496, 498), IMAGENET_CLASSIFICATION)
    assert meta.resized_hw == (248, 249) and meta.crop_offset_yx == (12, 12)


@pytest.mark.parametrize(
    ("original_hw", "resized_hw", "input_hw"),
    [
        ((427, 640), (800, 1199), (800, 1216)),  # landscape, bounded by the short side 800
        ((500, 281), (1333, 749), (1344, 768)),  # portrait, bounded by the long side 1333
        ((500, 375), (1067, 800), (1088, 800)),  # portrait, bounded by the short side 800
        ((800, 1333), (800, 1333), (800, 1344)),  # already in place: no resize
        ((1000, 1500), (800, 1200), (800, 1216)),  # downscaling
    ],
)
def test_detection_keep_ratio_sizes_and_padding(original_hw, resized_hw, input_hw) -> None:
    image = generated(*original_hw)
    array, meta = preprocess_image(image, COCO_DETECTION)
    assert meta.resized_hw == resized_hw
    assert meta.input_hw == input_hw == array.shape[1:]
    assert meta.crop_offset_yx == (0, 0)
    assert meta.scale_yx == (resized_hw[0] / original_hw[0], resized_hw[1] / original_hw[1])
    # Valid region: the image resized as mmcv does (cv2, bilinear) and normalised by hand; padding: the pad value.
    cv2 = pytest.importorskip("cv2")
    resized = cv2.resize(np.asarray(image), resized_hw[::-1], interpolation=cv2.INTER_LINEAR).astype(np.float32)
    expected = (resized - np.float32([123.675, 116.28, 103.53])) / np.float32([58.395, 57.12, 57.375])
    np.testing.assert_array_equal(array[:, : resized_hw[0], : resized_hw[1]], expected.transpose(2, 0, 1))
    assert np.all(array[:, resized_hw[0]:, :] == 0) and np.all(array[:, :, resized_hw[1]:] == 0)


@pytest.mark.parametrize(
    ("original_hw", "resized_hw"),
    [((512, 683), (512, 683)), ((427, 640), (512, 767)), ((640, 427), (767, 512)), ((256, 256), (512, 512)),
     ((100, 1000), (205, 2048))],
)
def test_segmentation_keep_ratio_sizes(original_hw, resized_hw) -> None:
    """ADE20k: scale (2048, 512), keep ratio, no padding (pad_divisor 1)."""
    assert resized_size(original_hw, ADE20K_SEGMENTATION) == resized_hw
    array, meta = preprocess_image(generated(*original_hw), ADE20K_SEGMENTATION)
    assert array.shape == (3, *resized_hw) and meta.input_hw == resized_hw


def test_exact_resize_ignores_aspect_ratio() -> None:
    spec = PreprocessSpec("exact", (32, 48), interpolation="bilinear")
    array, meta = preprocess_image(generated(90, 40), spec)
    assert array.shape == (3, 32, 48)
    assert meta.resized_hw == (32, 48) and meta.scale_yx == (32 / 90, 48 / 40)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_other_image_modes_are_converted_to_rgb(mode: str) -> None:
    rgb = photo("coffee").convert(mode).convert("RGB")
    converted, _ = preprocess_image(photo("coffee").convert(mode), IMAGENET_CLASSIFICATION)
    direct, _ = preprocess_image(rgb, IMAGENET_CLASSIFICATION)
    np.testing.assert_array_equal(converted, direct)


def test_empty_image_is_rejected() -> None:
    with pytest.raises(ValueError, match="no pixels"):
        resized_size((0, 10), COCO_DETECTION)


# ------------------------------------------------------------------------------ official mmdet/mmseg resize
cv2 = pytest.importorskip("cv2")


def mmcv_rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's `rescale_size` for a (long, short) scale, written from its documented rule: the factor is the
    largest that keeps both sides within the scale; new sides round half up, int(side · factor + 0.5)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(width * factor + 0.5), int(height * factor + 0.5)


@pytest.mark.parametrize("spec", [COCO_DETECTION, ADE20K_SEGMENTATION], ids=["coco", "ade20k"])
@pytest.mark.parametrize("source", PHOTOS)
def test_official_dense_archs_resize_pixel_exactly_like_opencv(spec: PreprocessSpec, source: str) -> None:
    image = photo(source)
    array, meta = preprocess_image(image, spec)
    width, height = mmcv_rescale_size(image.width, image.height, spec.size)
    assert meta.resized_hw == (height, width)
    expected = cv2.resize(np.asarray(image), (width, height), interpolation=cv2.INTER_LINEAR)
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    restored = array[:, :height, :width].transpose(1, 2, 0) * std + mean
    np.testing.assert_array_equal(np.rint(restored).astype(np.uint8), expected)
    if (width, height) != image.size:  # the choice matters: Pillow's antialiased resize differs on many pixels
        pillow = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
        assert (pillow != expected).mean() > 0.05


@pytest.mark.parametrize("width", [100, 333, 500, 640, 1000, 1333, 1999, 3000])
@pytest.mark.parametrize("height", [75, 250, 427, 480, 799, 800, 1201])
def test_keep_ratio_sizes_follow_mmcv_including_half_pixels(width: int, height: int) -> None:
    for spec in (COCO_DETECTION, ADE20K_SEGMENTATION):
        assert resized_size((height, width), spec) == mmcv_rescale_size(width, height, spec.size)[::-1]


def test_timm_archs_keep_resizing_with_pillow() -> None:
    assert IMAGENET_CLASSIFICATION.resize_backend == "pillow"
    old = IMAGENET_CLASSIFICATION.to_json().replace(', "resize_backend": "pillow"', "")
    assert "resize_backend" not in old and PreprocessSpec.from_json(old) == IMAGENET_CLASSIFICATION
