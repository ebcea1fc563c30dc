"""The request path's pure steps: decode → preprocess (before the batcher) and postprocess → JSON (after it).

Everything here is synchronous numpy/Pillow work that the API runs in a thread pool. Task-specific
geometry (box rescaling, mask pasting, label-map resizing) comes from `models.postprocess` so the
service and the offline evaluation share one implementation.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from models.preprocess import ImageMeta, preprocess_image
from service.decode import decode_image
from service.model_info import ModelInfo


@dataclass(frozen=True)
class PreparedImage:
    """One decoded image and its model input (batch dimension of 1)."""

    image: Image.Image
    pixel_values: np.ndarray  # (1, 3, H, W) float32
    meta: ImageMeta


def prepare_image(data: bytes, info: ModelInfo, *, max_pixels: int, what: str = "image") -> PreparedImage:
    image = decode_image(data, max_pixels=max_pixels, what=what)
    return prepare_decoded(image, info)


def prepare_decoded(image: Image.Image, info: ModelInfo) -> PreparedImage:
    array, meta = preprocess_image(image, info.preprocess)
    return PreparedImage(image=image, pixel_values=np.ascontiguousarray(array[None], dtype=np.float32), meta=meta)


# ------------------------------------------------------------------------------------------ classification
def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def top_k(logits: np.ndarray, info: ModelInfo, k: int) -> list[dict[str, Any]]:
    """Highest-probability classes of one image's logits (K,); ties broken by index."""
    probabilities = softmax(logits)
    k = min(k, probabilities.shape[0])
    order = np.lexsort((np.arange(probabilities.shape[0]), -probabilities))[:k]
    return [{"index": int(i), "label": info.label(int(i)), "score": float(probabilities[i])} for i in order]


def classification_result(outputs: dict[str, np.ndarray], info: ModelInfo, k: int) -> dict[str, Any]:
    return {"top_k": top_k(outputs["logits"][0], info, k)}


# ------------------------------------------------------------------------------------------------- masks
def encode_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """COCO RLE (pycocotools, column-major) of boolean masks (K, H, W); counts as a UTF-8 string."""
    from pycocotools import mask as mask_utils

    if masks.shape[0] == 0:
        return []
    encoded = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in encoded]


# --------------------------------------------------------------------------------------------- detection
def detection_result(
    outputs: dict[str, np.ndarray], meta: ImageMeta, info: ModelInfo, *, score_threshold: float, with_masks: bool
) -> dict[str, Any]:
    from models.postprocess import paste_masks, rescale_boxes

    scores = np.asarray(outputs["scores"], dtype=np.float32).reshape(-1)
    keep = np.flatnonzero(scores >= score_threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    boxes = rescale_boxes(np.asarray(outputs["boxes"], dtype=np.float32).reshape(-1, 4)[keep], meta.scale_yx)
    height, width = meta.original_hw
    boxes = np.clip(boxes, 0, [width, height, width, height])
    labels = np.asarray(outputs["labels"]).reshape(-1)[keep].astype(np.int64)
    rles: list[dict[str, Any]] | list[None] = [None] * len(keep)
    if with_masks and len(keep):
        masks = paste_masks(np.asarray(outputs["mask_probs"])[keep], boxes, meta.original_hw)
        rles = encode_rle(masks)
    detections = []
    for box, label, score, rle in zip(boxes, labels, scores[keep], rles, strict=True):
        detection: dict[str, Any] = {
            "box": [round(float(v), 2) for v in box],
            "index": int(label),
            "label": info.label(int(label)),
            "score": float(score),
        }
        if rle is not None:
            detection["mask"] = rle
        detections.append(detection)
    return {"detections": detections}


# ------------------------------------------------------------------------------------------ segmentation
def segmentation_label_map(outputs: dict[str, np.ndarray], meta: ImageMeta) -> np.ndarray:
    from models.postprocess import segmentation_label_map as label_map

    return label_map(outputs["seg_logits"][0], meta.resized_hw, meta.original_hw, meta.input_hw)


def segmentation_result(label_map: np.ndarray, info: ModelInfo) -> dict[str, Any]:
    height, width = label_map.shape
    indices, areas = np.unique(label_map, return_counts=True)
    masks = np.stack([label_map == i for i in indices]) if len(indices) else np.zeros((0, height, width), bool)
    rles = encode_rle(masks)
    return {
        "width": int(width),
        "height": int(height),
        "classes": [
            {"index": int(i), "label": info.label(int(i)), "area": int(a), "rle": rle}
            for i, a, rle in zip(indices, areas, rles, strict=True)
        ],
    }


def label_map_png(label_map: np.ndarray) -> bytes:
    """The class-index map as a PNG: 8-bit gray when indices fit, else 16-bit."""
    if label_map.max(initial=0) < 256:
        image = Image.fromarray(label_map.astype(np.uint8))
    else:
        image = Image.fromarray(label_map.astype(np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ explain
_PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
     [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255], [170, 110, 40],
     [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128]],
    dtype=np.uint8,
)


def cluster_palette(count: int) -> np.ndarray:
    """Distinct colours for `count` clusters (the fixed palette, then golden-ratio hues)."""
    if count <= len(_PALETTE):
        return _PALETTE[:count]
    extra = count - len(_PALETTE)
    hues = (np.arange(extra) * 0.618033988749895) % 1.0
    hsv = np.stack([hues * 255, np.full(extra, 200), np.full(extra, 230)], axis=1).astype(np.uint8)
    rgb = np.asarray(Image.fromarray(hsv[None], mode="HSV").convert("RGB"))[0]
    return np.concatenate([_PALETTE, rgb])


def explain_result(outputs: dict[str, np.ndarray], prepared: PreparedImage, *, overlay_alpha: float) -> dict[str, Any]:
    """Per-stage cluster maps: which cluster claims each patch most (array) and that map over the image (PNG)."""
    stages = []
    for name in sorted(outputs):
        maps = outputs[name][0]  # (M, h, w): per cluster a distribution over the stage's patches
        clusters, h, w = maps.shape
        assignment = maps.argmax(axis=0)
        weight = maps.max(axis=0) / np.maximum(maps.sum(axis=0), 1e-12)
        overlay = overlay_png(assignment, prepared, clusters, overlay_alpha)
        stages.append({
            "stage": int(name.removeprefix("clusters_stage")),
            "clusters": int(clusters),
            "height": int(h),
            "width": int(w),
            "assignment": assignment.astype(int).tolist(),
            "confidence": np.round(weight, 4).tolist(),
            "overlay_png": base64.b64encode(overlay).decode("ascii"),
        })
    return {"width": prepared.image.width, "height": prepared.image.height, "stages": stages}


def overlay_png(assignment: np.ndarray, prepared: PreparedImage, clusters: int, alpha: float) -> bytes:
    """Colour each image pixel by the cluster of the patch it fell into, blended over the original image."""
    meta = prepared.meta
    input_h, input_w = meta.input_hw
    colours = cluster_palette(clusters)[assignment]  # (h, w, 3)
    patch_image = Image.fromarray(colours).resize((input_w, input_h), Image.Resampling.NEAREST)
    resized_h, resized_w = meta.resized_hw
    offset_y, offset_x = meta.crop_offset_yx
    # The model input is a window of the resized image (centre crop) or the resized image plus padding.
    canvas = Image.new("RGB", (resized_w, resized_h))
    covered = Image.new("L", (resized_w, resized_h), 0)
    canvas.paste(patch_image, (offset_x, offset_y))
    covered.paste(255, (offset_x, offset_y, min(offset_x + input_w, resized_w), min(offset_y + input_h, resized_h)))
    original = prepared.image
    canvas = canvas.resize(original.size, Image.Resampling.NEAREST)
    covered = covered.resize(original.size, Image.Resampling.NEAREST)
    blended = Image.blend(original, canvas, alpha)
    result = Image.composite(blended, original, covered)
    buffer = io.BytesIO()
    result.save(buffer, format="PNG")
    return buffer.getvalue()
