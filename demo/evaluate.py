"""Held-out evaluation of the demo models: top-1, COCO box/mask mAP (pycocotools) and mIoU.

The metric functions take plain numpy predictions, so the offline PyTorch figures and the figures
measured through the REST API are computed by the same code. Torch is imported only by the
`predict_*` functions.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from demo import data
from models.demo.archs import DETECTION_SCORE_THRESHOLD, DIGIT_SIZE, SCENE_HW, SEG_NUM_CLASSES

HELDOUT_SCENES = 200
EVAL_SEED = 0


@dataclass(frozen=True)
class Detections:
    """One image's instances in original pixels: boxes x1y1x2y2, scores, 0-based labels, bool masks."""

    boxes: np.ndarray  # (K, 4) float
    scores: np.ndarray  # (K,)
    labels: np.ndarray  # (K,) int
    masks: np.ndarray  # (K, H, W) bool


# ---------------------------------------------------------------------------------------------------
# Held-out data


def heldout_digits(count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The held-out digit images (rendered with EVAL_SEED) and labels; `count` takes an even class mix."""
    images, labels = data.digit_images("heldout", seed=EVAL_SEED, side=DIGIT_SIZE)
    if count is None or count >= len(labels):
        return images, labels
    per_class = count // 10
    chosen = np.sort(np.concatenate([np.flatnonzero(labels == d)[:per_class] for d in range(10)]))
    return images[chosen], labels[chosen]


def heldout_scenes(count: int = HELDOUT_SCENES) -> list[data.Scene]:
    return data.scenes("heldout", count, seed=EVAL_SEED, hw=SCENE_HW)


# ---------------------------------------------------------------------------------------------------
# Metrics (numpy / pycocotools only)


def top1_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Percentage of correct predictions."""
    return 100.0 * float(np.mean(np.asarray(predicted) == np.asarray(labels)))


def mean_iou(predicted_maps: Sequence[np.ndarray], target_maps: Sequence[np.ndarray], num_classes: int) -> float:
    """mIoU in percent over the classes that occur in the targets or predictions (mmseg convention)."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for predicted, target in zip(predicted_maps, target_maps, strict=True):
        pairs = target.astype(np.int64).ravel() * num_classes + predicted.astype(np.int64).ravel()
        confusion += np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return 100.0 * float(np.mean(intersection[present] / union[present]))


def _rle(mask: np.ndarray) -> dict[str, object]:
    from pycocotools import mask as mask_utils

    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode("ascii")
    return encoded


def _coco_ground_truth(scenes: Sequence[data.Scene]):
    from pycocotools.coco import COCO

    images, annotations = [], []
    for image_id, item in enumerate(scenes, start=1):
        height, width = item.image.shape[:2]
        images.append({"id": image_id, "height": height, "width": width})
        for box, label, mask in zip(item.boxes, item.labels, item.masks, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(mask.sum()), "iscrowd": 0,
                "segmentation": _rle(mask),
            })
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": images, "annotations": annotations,
        "categories": [{"id": d + 1, "name": str(d)} for d in range(10)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
    return ground_truth


def coco_map(scenes: Sequence[data.Scene], detections: Sequence[Detections]) -> dict[str, float]:
    """COCO AP@[.5:.95] and AP@.5 (percent) for boxes and masks."""
    from pycocotools.cocoeval import COCOeval

    ground_truth = _coco_ground_truth(scenes)
    results = []
    for image_id, found in enumerate(detections, start=1):
        for box, score, label, mask in zip(found.boxes, found.scores, found.labels, found.masks, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append({
                "image_id": image_id, "category_id": int(label) + 1, "score": float(score),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "segmentation": _rle(mask),
            })
    figures = {}
    for iou_type in ("bbox", "segm"):
        if not results:
            figures[f"{iou_type}_mAP"] = figures[f"{iou_type}_AP50"] = 0.0
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            predictions = ground_truth.loadRes([dict(r) for r in results])
            evaluator = COCOeval(ground_truth, predictions, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        figures[f"{iou_type}_mAP"] = 100.0 * float(evaluator.stats[0])
        figures[f"{iou_type}_AP50"] = 100.0 * float(evaluator.stats[1])
    return figures


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, 4) × (G, 4) x1y1x2y2 boxes → (K, G) IoU."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def found_and_precision(
    scenes: Sequence[data.Scene], detections: Sequence[Detections], score_threshold: float, iou: float = 0.5
) -> dict[str, float]:
    """What a user sees at a score threshold: % of digits found with the right label, % of boxes right.

    Each scene's detections scoring ≥ `score_threshold`, best first, claim the unclaimed true digit of the
    same label they overlap most (box IoU ≥ `iou`); claimed digits are found, claiming boxes are right.
    Every other box (wrong label, duplicate, no digit) counts against precision.
    """
    digits = boxes = right = 0
    for item, found in zip(scenes, detections, strict=True):
        keep = np.flatnonzero(np.asarray(found.scores) >= score_threshold)
        keep = keep[np.argsort(-np.asarray(found.scores)[keep], kind="stable")]
        digits += len(item.labels)
        boxes += len(keep)
        if not len(keep) or not len(item.labels):
            continue
        overlaps = _box_iou(np.asarray(found.boxes, dtype=np.float64)[keep], item.boxes.astype(np.float64))
        claimed = np.zeros(len(item.labels), dtype=bool)
        for row, index in enumerate(keep):
            candidates = (overlaps[row] >= iou) & ~claimed & (item.labels == found.labels[index])
            if candidates.any():
                claimed[int(np.argmax(np.where(candidates, overlaps[row], -1.0)))] = True
                right += 1
    return {
        "found_pct": 100.0 * right / max(digits, 1),
        "precision_pct": 100.0 * right / max(boxes, 1),
        "digits": float(digits),
        "boxes": float(boxes),
    }


def majority_label_accuracy(predicted_maps: Sequence[np.ndarray], scenes: Sequence[data.Scene]) -> float:
    """% of digits whose pixels' most frequent predicted label (background included) is the digit's own.

    The identity a user reads off a label map; unlike mIoU it does not punish thin strokes drawn a pixel
    too wide, but a digit lost to background or split between labels counts as wrong.
    """
    right = total = 0
    for predicted, item in zip(predicted_maps, scenes, strict=True):
        for mask, label in zip(item.masks, item.labels, strict=True):
            counts = np.bincount(np.asarray(predicted)[mask].astype(np.int64), minlength=SEG_NUM_CLASSES)
            right += int(np.argmax(counts) == label + 1)
            total += 1
    return 100.0 * right / max(total, 1)


# ---------------------------------------------------------------------------------------------------
# Offline PyTorch predictions


def predict_digits(model, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
    import torch

    from demo.train import to_input

    predicted = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            logits = model(to_input(images[start : start + batch_size], "demo_digits_cls"))
            predicted.append(logits.argmax(1).numpy())
    return np.concatenate(predicted)


def predict_segmentation(model, scenes: Sequence[data.Scene], batch_size: int = 16) -> list[np.ndarray]:
    """Label maps the way the service makes them: the arch's preprocessing (resize to fit its input bound,
    normalise, pad to 32), batches of same-size inputs only (the service never pads one image to another's
    size: PaCa's clustering sees every token), then its post-processing (logits → original-size argmax)."""
    import torch
    from PIL import Image

    from models.postprocess import segmentation_label_map
    from models.preprocess import preprocess_image
    from models.registry import get_arch

    spec = get_arch("demo_digits_seg").preprocess
    prepared = [preprocess_image(Image.fromarray(item.image), spec) for item in scenes]
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, (_, meta) in enumerate(prepared):
        by_size.setdefault(meta.input_hw, []).append(index)
    maps: list[np.ndarray] = [np.empty(0)] * len(scenes)
    with torch.inference_mode():
        for indices in by_size.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                logits = model(torch.from_numpy(np.stack([prepared[i][0] for i in chunk]))).numpy()
                for index, scene_logits in zip(chunk, logits, strict=True):
                    meta = prepared[index][1]
                    maps[index] = segmentation_label_map(scene_logits, meta.resized_hw, meta.original_hw, meta.input_hw)
    return maps


def predict_detections(model, scenes: Sequence[data.Scene]) -> list[Detections]:
    """Per-scene detections via the exported graph's path (`forward_raw`) and the service's mask pasting."""
    import torch

    from demo.train import to_input
    from models.postprocess import paste_masks

    found = []
    with torch.inference_mode():
        for item in scenes:
            hw = item.image.shape[:2]
            *rows, counts = model.forward_raw(to_input(item.image[None], "demo_digits_det"), hw)
            count = int(counts[0])  # the image's real rows; the rest is padding
            boxes, scores, labels, mask_probs = (t[0, :count].numpy() for t in rows)
            found.append(Detections(boxes, scores, labels, paste_masks(mask_probs, boxes, hw)))
    return found


def evaluate_offline(
    arches: Sequence[str], scene_count: int = HELDOUT_SCENES, score_threshold: float = DETECTION_SCORE_THRESHOLD
) -> dict[str, dict[str, float]]:
    """Held-out figures of the trained demo models, computed with PyTorch on CPU."""
    from demo.train import load_trained

    figures: dict[str, dict[str, float]] = {}
    if "demo_digits_cls" in arches:
        images, labels = heldout_digits()
        predicted = predict_digits(load_trained("demo_digits_cls"), images)
        figures["demo_digits_cls"] = {"top1": top1_accuracy(predicted, labels), "images": float(len(labels))}
    scenes = heldout_scenes(scene_count) if {"demo_digits_seg", "demo_digits_det"} & set(arches) else []
    if "demo_digits_seg" in arches:
        maps = predict_segmentation(load_trained("demo_digits_seg"), scenes)
        miou = mean_iou(maps, [s.semantic_map() for s in scenes], SEG_NUM_CLASSES)
        figures["demo_digits_seg"] = {
            "mIoU": miou, "majority_label_pct": majority_label_accuracy(maps, scenes), "images": float(len(scenes)),
        }
    if "demo_digits_det" in arches:
        detections = predict_detections(load_trained("demo_digits_det"), scenes)
        at_threshold = found_and_precision(scenes, detections, score_threshold)
        figures["demo_digits_det"] = {
            **coco_map(scenes, detections),
            "score_threshold": score_threshold,
            "found_pct": at_threshold["found_pct"],
            "precision_pct": at_threshold["precision_pct"],
            "images": float(len(scenes)),
        }
    return figures
