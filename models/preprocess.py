"""Applies a `PreprocessSpec` to a PIL image: resize → crop → normalise → pad (Pillow + numpy, no torch).

Export and service share this one implementation, so a model sees the same pixels everywhere. The
resize rules reproduce the reference pipelines exactly:
- "short_side_center_crop" = timm's eval transform (torchvision `Resize(int)` on the PIL image, then
  `CenterCrop`): short side → `resize_short`, long side truncated `int(short · long / short_side)`;
  crop offsets `int(round((size − crop) / 2))`.
- "keep_ratio_within" = mmcv `rescale_size`: s = min(long_max / long, short_max / short),
  new side = int(side · s + 0.5).
- "exact": plain resize to `size`.
Resizing uses the library of the arch's official pipeline (`PreprocessSpec.resize_backend`): Pillow
(antialiased; timm's classification transform) or OpenCV (`cv2.resize`, as mmcv resizes for mmdet and
mmseg), with the spec's interpolation. Normalisation is (x − mean) / std in float32 on the 0–255 scale, as
mmengine's data preprocessor does; padding goes bottom/right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.preprocess_spec import PreprocessSpec

# Resize-then-crop allocates the whole resized image; beyond this many times the crop, resample the box only.
MAX_RESIZE_OVERSHOOT = 16

RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class ImageMeta:
    """Where the model input came from, so outputs can be mapped back onto the original image.

    `resized_hw` is the image after resizing and before crop/pad; `scale_yx` = resized / original;
    `crop_offset_yx` is the top-left corner of the crop inside the resized image ((0, 0) without one);
    `input_hw` is the array the model sees (after crop or padding).
    """

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    scale_yx: tuple[float, float]
    crop_offset_yx: tuple[int, int]
    input_hw: tuple[int, int]


def resized_size(original_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int]:
    """(H, W) after the spec's resize step, before crop and padding."""
    height, width = original_hw
    if height <= 0 or width <= 0:
        raise ValueError(f"image has no pixels: {width}×{height}")
    if spec.resize_mode == "exact":
        return spec.size
    if spec.resize_mode == "short_side_center_crop":
        if spec.resize_short is None:
            raise ValueError("short_side_center_crop needs resize_short")
        short, long = sorted((height, width))
        new_short, new_long = spec.resize_short, int(spec.resize_short * long / short)
        return (new_short, new_long) if height <= width else (new_long, new_short)
    if spec.resize_mode == "keep_ratio_within":
        long_max, short_max = max(spec.size), min(spec.size)
        scale = min(long_max / max(height, width), short_max / min(height, width))
        # Very thin images would round a side to 0 pixels: keep at least one.
        return max(int(height * scale + 0.5), 1), max(int(width * scale + 0.5), 1)
    raise ValueError(f"unknown resize_mode {spec.resize_mode!r}")


def center_crop_offset(resized_hw: tuple[int, int], crop_hw: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a centred crop, rounded like torchvision's `center_crop` (half to even)."""
    top = round((resized_hw[0] - crop_hw[0]) / 2.0)
    left = round((resized_hw[1] - crop_hw[1]) / 2.0)
    return top, left


def input_size(original_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[tuple[int, int], tuple[int, int]]:
    """(resized H, W) and the model input's (H, W) for an image of `original_hw`, without touching pixels."""
    resized_hw = resized_size(original_hw, spec)
    if spec.resize_mode == "short_side_center_crop":
        return resized_hw, spec.size
    if spec.pad_divisor > 1:
        return resized_hw, padded_size(resized_hw, spec.pad_divisor)
    return resized_hw, resized_hw


def padded_size(hw: tuple[int, int], divisor: int) -> tuple[int, int]:
    """The next multiple of `divisor` on both sides."""
    return tuple(-(-side // divisor) * divisor for side in hw)  # type: ignore[return-value]


def normalize(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 (H, W, 3) RGB → float32 (3, H, W), (x − mean) / std on the 0–255 scale."""
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    normalised = (pixels.astype(np.float32) - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def pad_bottom_right(array: np.ndarray, target_hw: tuple[int, int], value: float) -> np.ndarray:
    channels, height, width = array.shape
    if (height, width) == tuple(target_hw):
        return array
    out = np.full((channels, *target_hw), value, dtype=array.dtype)
    out[:, :height, :width] = array
    return out


def resize(image: Image.Image, hw: tuple[int, int], spec: PreprocessSpec) -> Image.Image:
    """Resize to (H, W) with the spec's library and interpolation (OpenCV's as mmcv calls it: uint8 in,
    `cv2.resize(img, (W, H), interpolation=...)`)."""
    if spec.resize_backend == "opencv":
        import cv2

        codes = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}
        resized = cv2.resize(np.asarray(image), (hw[1], hw[0]), interpolation=codes[spec.interpolation])
        return Image.fromarray(resized)
    return image.resize((hw[1], hw[0]), RESAMPLING[spec.interpolation])


def _resize_and_crop(image: Image.Image, resized_hw: tuple[int, int], crop_offset: tuple[int, int],
                     spec: PreprocessSpec) -> Image.Image:
    """Resize then centre-crop, timm's way. For very elongated images the full resize would be far larger
    than the crop (an 8000×1 image resized by its short side is 1.98 M × 248 pixels), so beyond
    MAX_RESIZE_OVERSHOOT only the crop's source box is resampled (Pillow `resize(box=...)`): the same
    geometry, pixel values within a few grey levels of the full resize."""
    top, left = crop_offset
    crop_h, crop_w = spec.size
    resample = RESAMPLING[spec.interpolation]
    if resized_hw[0] * resized_hw[1] <= MAX_RESIZE_OVERSHOOT * crop_h * crop_w:
        resized = resize(image, resized_hw, spec) if resized_hw != (image.height, image.width) else image
        return resized.crop((left, top, left + crop_w, top + crop_h))
    scale_y, scale_x = image.height / resized_hw[0], image.width / resized_hw[1]
    box = (left * scale_x, top * scale_y, (left + crop_w) * scale_x, (top + crop_h) * scale_y)
    return image.resize((crop_w, crop_h), resample, box=box)


def preprocess_image(image: Image.Image, spec: PreprocessSpec) -> tuple[np.ndarray, ImageMeta]:
    """The model input (3, H, W) float32 for one image, and the geometry needed to undo it."""
    if spec.channel_order != "RGB":
        raise ValueError(f"unsupported channel order {spec.channel_order!r}")
    if image.mode != "RGB":
        image = image.convert("RGB")
    original_hw = (image.height, image.width)
    resized_hw = resized_size(original_hw, spec)
    crop_offset = (0, 0)
    if spec.resize_mode == "short_side_center_crop":
        crop_offset = center_crop_offset(resized_hw, spec.size)
        image = _resize_and_crop(image, resized_hw, crop_offset, spec)
    elif resized_hw != original_hw:
        image = resize(image, resized_hw, spec)
    array = normalize(np.asarray(image), spec)
    if spec.pad_divisor > 1:
        array = pad_bottom_right(array, padded_size(array.shape[1:], spec.pad_divisor), spec.pad_value)
    meta = ImageMeta(
        original_hw=original_hw,
        resized_hw=resized_hw,
        scale_yx=(resized_hw[0] / original_hw[0], resized_hw[1] / original_hw[1]),
        crop_offset_yx=crop_offset,
        input_hw=(array.shape[1], array.shape[2]),
    )
    return array, meta
