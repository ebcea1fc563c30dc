"""The committed sample images get the right answers from the served demo models, through the REST API.

These are the files the README and docs tell a new user to post (`loadtest/images/`); their truth is
stored next to them in `truth.json` (written by `loadtest/make_images.py` from the generator). A real
`paca serve` process serves the ONNX artifacts of the committed weights. Requests use the server's
defaults (no `score_threshold`), so the detector's default threshold is what is checked.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from models.demo.archs import SERVED_NAMES

SAMPLES = Path(__file__).resolve().parents[2] / "loadtest" / "images"
TRUTH: dict[str, dict] = json.loads((SAMPLES / "truth.json").read_text())
DIGIT_FILES = sorted(name for name, item in TRUTH.items() if item["task"] == "classification")
SCENE_FILES = sorted(name for name, item in TRUTH.items() if item["task"] == "scene")
CLASSIFIER, DETECTOR, SEGMENTER = (SERVED_NAMES[a] for a in ("demo_digits_cls", "demo_digits_det", "demo_digits_seg"))
MATCH_IOU = 0.5

pytestmark = pytest.mark.slow

# Samples the committed demo weights still answer wrongly (docs/demo-models.md, "Known misses"): strict, so
# a model that gets one right fails here until the entry is removed. The held-out figures say how often.
KNOWN_MISSES = {
    ("classifier", "digit_09_label9.png"): "a 9 whose tail nearly closes a second loop, read as 8 (held-out top-1 "
    "99.1 %)",
}


def _samples(model: str, names: list[str]) -> list:
    """`names` as parameters, the known misses of `model` marked as strict expected failures."""
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[model, name]))
        if (model, name) in KNOWN_MISSES else name
        for name in names
    ]


def _post(server, path: str, name: str, **extra) -> httpx.Response:
    content = (SAMPLES / name).read_bytes()
    mime = "image/jpeg" if name.endswith(".jpg") else "image/png"
    response = httpx.post(f"{server.url}{path}", files={"image": (name, content, mime)}, timeout=120, **extra)
    assert response.status_code == 200, response.text
    return response


def box_iou(a: list[float], b: list[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_detections(truth: list[dict], detections: list[dict]) -> tuple[list[dict], list[dict]]:
    """Best-scoring detections first claim the unclaimed true digit of their label they overlap most.

    Returns (true digits left unclaimed, detections that claimed nothing).
    """
    claimed: set[int] = set()
    unmatched = []
    for found in sorted(detections, key=lambda d: -d["score"]):
        overlaps = [
            (box_iou(found["box"], digit["box"]), index) for index, digit in enumerate(truth)
            if index not in claimed and digit["label"] == found["label"]
        ]
        best = max(overlaps, default=(0.0, -1))
        if best[0] >= MATCH_IOU:
            claimed.add(best[1])
        else:
            unmatched.append(found)
    return [digit for index, digit in enumerate(truth) if index not in claimed], unmatched


def test_matching_flags_misses_wrong_labels_and_duplicates():
    """The matcher itself: a right box counts once; a wrong label, a duplicate or a stray box does not."""
    truth = [{"label": "3", "box": [10, 10, 30, 40]}, {"label": "7", "box": [50, 10, 70, 40]}]
    right = {"label": "3", "score": 0.9, "box": [11, 10, 30, 41]}
    assert match_detections(truth, [right]) == ([truth[1]], [])
    duplicate = {"label": "3", "score": 0.8, "box": [10, 11, 29, 40]}
    wrong_label = {"label": "1", "score": 0.95, "box": [50, 10, 70, 40]}
    stray = {"label": "7", "score": 0.6, "box": [90, 90, 120, 120]}
    missed, extra = match_detections(truth, [right, duplicate, wrong_label, stray])
    assert missed == [truth[1]]
    assert extra == [wrong_label, duplicate, stray]


def test_known_misses_name_real_samples():
    assert {name for _, name in KNOWN_MISSES} <= set(TRUTH)


def test_truth_file_covers_every_sample_image():
    images = {p.name for p in SAMPLES.iterdir() if p.suffix in (".png", ".jpg")}
    assert images == set(TRUTH), images ^ set(TRUTH)
    assert len(DIGIT_FILES) == 10 and len(SCENE_FILES) == 6
    for name in DIGIT_FILES:  # the file names carry the label too (the README refers to them)
        assert name.endswith(f"_label{TRUTH[name]['label']}.png")


@pytest.mark.parametrize("name", _samples("classifier", DIGIT_FILES))
def test_classifier_reads_each_sample_digit(demo_server, name):
    top = _post(demo_server, f"/v1/models/{CLASSIFIER}/classify?k=3", name).json()["results"][0]["top_k"]
    assert top[0]["label"] == TRUTH[name]["label"], f"{name}: {top}"


@pytest.mark.parametrize("name", _samples("detector", SCENE_FILES))
def test_detector_finds_each_sample_digit_and_nothing_else(demo_server, name):
    detections = _post(demo_server, f"/v1/models/{DETECTOR}/detect?masks=false", name).json()["results"][0][
        "detections"
    ]
    missed, extra = match_detections(TRUTH[name]["digits"], detections)
    assert not missed and not extra, f"{name}: missed {missed}, extra {extra}; all: {detections}"


@pytest.mark.parametrize("name", _samples("segmenter", SCENE_FILES))
def test_segmenter_labels_each_sample_digit(demo_server, name):
    """The most frequent label over each digit's stroke pixels (background included) is that digit."""
    response = _post(demo_server, f"/v1/models/{SEGMENTER}/segment", name, headers={"Accept": "image/png"})
    label_map = np.asarray(Image.open(io.BytesIO(response.content)))
    wrong = []
    for digit in TRUTH[name]["digits"]:
        strokes = mask_utils.decode(digit["mask"]).astype(bool)
        assert strokes.shape == label_map.shape
        counts = np.bincount(label_map[strokes].astype(np.int64), minlength=11)
        if int(np.argmax(counts)) != int(digit["label"]) + 1:  # label map: 0 background, digit d → d + 1
            wrong.append((digit["label"], digit["box"], counts.tolist()))
    assert not wrong, f"{name}: (label, box, pixels per class) {wrong}"


def test_detector_masks_are_served_as_rle(demo_server):
    """With masks on (the default), each detection carries a COCO RLE mask of the image's size."""
    name = SCENE_FILES[0]
    detections = _post(demo_server, f"/v1/models/{DETECTOR}/detect", name).json()["results"][0]["detections"]
    height, width = np.asarray(Image.open(SAMPLES / name)).shape[:2]
    assert detections
    for found in detections:
        mask = mask_utils.decode({"size": found["mask"]["size"], "counts": found["mask"]["counts"]})
        assert mask.shape == (height, width) and mask.any()
