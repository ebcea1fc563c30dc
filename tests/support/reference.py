"""Independent unbatched reference: the same artifact in an in-process ONNX Runtime session, batch 1."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from models.postprocess import paste_masks, rescale_boxes, segmentation_label_map
from models.preprocess import ImageMeta, preprocess_image
from models.preprocess_spec import PreprocessSpec


@cache
def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def spec_of(path: Path) -> PreprocessSpec:
    return PreprocessSpec.from_json(session(path).get_modelmeta().custom_metadata_map["paca.preprocess"])


def run_one(path: Path, data: bytes, outputs: list[str]) -> tuple[dict[str, np.ndarray], ImageMeta]:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    array, meta = preprocess_image(image, spec_of(path))
    results = session(path).run(outputs, {"pixel_values": array[None]})
    return dict(zip(outputs, results, strict=True)), meta


def class_probabilities(path: Path, data: bytes) -> np.ndarray:
    logits = run_one(path, data, ["logits"])[0]["logits"][0].astype(np.float64)
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def label_map(path: Path, data: bytes) -> np.ndarray:
    outputs, meta = run_one(path, data, ["seg_logits"])
    return segmentation_label_map(outputs["seg_logits"][0], meta.resized_hw, meta.original_hw, meta.input_hw)


def detections(path: Path, data: bytes, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(boxes in original pixels, scores, labels, pasted masks) above `threshold`, highest score first."""
    outputs, meta = run_one(path, data, ["boxes", "scores", "labels", "mask_probs", "num_detections"])
    real = int(outputs["num_detections"][0])  # the image's first `real` rows are detections, the rest padding
    boxes, scores, labels, mask_probs = (outputs[name][0, :real] for name in ("boxes", "scores", "labels",
                                                                               "mask_probs"))
    keep = np.flatnonzero(scores >= threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    boxes = rescale_boxes(boxes[keep], meta.scale_yx)
    height, width = meta.original_hw
    boxes = np.clip(boxes, 0, [width, height, width, height])
    masks = paste_masks(mask_probs[keep], boxes, meta.original_hw)
    return boxes, scores[keep], labels[keep], masks


def cluster_assignments(path: Path, data: bytes, name: str) -> np.ndarray:
    outputs, _ = run_one(path, data, [name])
    return outputs[name][0].argmax(axis=0)
