"""End-to-end proof on held-out data: accuracy through the REST API equals the offline PyTorch figure.

A real `paca serve` process on a loopback port serves the three demo models as ONNX artifacts exported
from the committed weights. Held-out images are posted as PNG files, concurrently, so decoding,
preprocessing, dynamic batching, ONNX Runtime and post-processing all sit between the image and the
answer. The same images go through the trained PyTorch models offline; the figures must agree within
0.5 points (a wrong channel order, normalisation, resize or mask paste costs far more than that).
"""

from __future__ import annotations

import asyncio
import io

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from demo import evaluate
from demo.train import load_trained
from models.demo.archs import SEG_NUM_CLASSES, SERVED_NAMES

CLASSIFIER, DETECTOR, SEGMENTER = (SERVED_NAMES[a] for a in ("demo_digits_cls", "demo_digits_det", "demo_digits_seg"))
DIGITS = 500  # 50 per class
SCENES = 40
CONCURRENCY = 16
TOLERANCE = 0.5  # percentage points
MIN_MIOU = 10.0  # background alone scores ~8.5 (one class of 11 at ~93% IoU)

# Offline PyTorch on one thread (as it was measured), so it does not compete with the server under test.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


async def _post_concurrently(url: str, requests: list[dict]) -> list[httpx.Response]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def post(http: httpx.AsyncClient, request: dict) -> httpx.Response:
        async with gate:
            return await http.post(**request)

    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        return list(await asyncio.gather(*(post(http, r) for r in requests)))


def _metric(text: str, name: str, model: str) -> float:
    prefix = f'{name}{{model="{model}",version="1"}} '
    return float(next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix) :])


@pytest.fixture(scope="module")
def scenes():
    return evaluate.heldout_scenes(SCENES)


def test_classifier_top1_through_rest_matches_pytorch(demo_server):
    images, labels = evaluate.heldout_digits(DIGITS)
    offline = evaluate.top1_accuracy(evaluate.predict_digits(load_trained("demo_digits_cls"), images), labels)

    before = httpx.get(f"{demo_server.url}/metrics").text
    requests = [{"url": f"/v1/models/{CLASSIFIER}/classify?k=1", "files": {"image": ("digit.png", _png(image))}}
                for image in images]
    responses = asyncio.run(_post_concurrently(demo_server.url, requests))
    after = httpx.get(f"{demo_server.url}/metrics").text
    assert all(r.status_code == 200 for r in responses), next(r.text for r in responses if r.status_code != 200)
    served = np.array([int(r.json()["results"][0]["top_k"][0]["label"]) for r in responses])
    through_rest = evaluate.top1_accuracy(served, labels)

    print(f"top-1 on {DIGITS} held-out digits: REST {through_rest:.2f}%, PyTorch {offline:.2f}%")
    assert abs(through_rest - offline) <= TOLERANCE, (through_rest, offline)
    assert through_rest > 90.0, f"the demo classifier should recognise held-out digits, got {through_rest:.1f}%"
    inferences = _metric(after, "nv_inference_count", CLASSIFIER) - _metric(before, "nv_inference_count", CLASSIFIER)
    executions = (_metric(after, "nv_inference_exec_count", CLASSIFIER)
                  - _metric(before, "nv_inference_exec_count", CLASSIFIER))
    assert inferences == DIGITS and executions < inferences, "concurrent requests should share batches"


def test_segmenter_miou_through_rest_matches_pytorch(demo_server, scenes):
    targets = [s.semantic_map() for s in scenes]
    offline = evaluate.mean_iou(
        evaluate.predict_segmentation(load_trained("demo_digits_seg"), scenes), targets, SEG_NUM_CLASSES
    )
    requests = [{"url": f"/v1/models/{SEGMENTER}/segment", "content": _png(s.image),
                 "headers": {"Content-Type": "image/png", "Accept": "image/png"}} for s in scenes]
    responses = asyncio.run(_post_concurrently(demo_server.url, requests))
    assert all(r.status_code == 200 for r in responses), next(r.text for r in responses if r.status_code != 200)
    served = [np.asarray(Image.open(io.BytesIO(r.content))) for r in responses]
    through_rest = evaluate.mean_iou(served, targets, SEG_NUM_CLASSES)

    print(f"mIoU on {SCENES} held-out scenes: REST {through_rest:.2f}, PyTorch {offline:.2f}")
    assert abs(through_rest - offline) <= TOLERANCE, (through_rest, offline)
    assert through_rest > MIN_MIOU


def _served_detections(response: httpx.Response, hw: tuple[int, int]) -> evaluate.Detections:
    found = response.json()["results"][0]["detections"]
    masks = [mask_utils.decode({"size": d["mask"]["size"], "counts": d["mask"]["counts"]}).astype(bool)
             for d in found]
    return evaluate.Detections(
        boxes=np.array([d["box"] for d in found], dtype=np.float32).reshape(-1, 4),
        scores=np.array([d["score"] for d in found], dtype=np.float32),
        labels=np.array([d["index"] for d in found], dtype=np.int64),
        masks=np.stack(masks) if masks else np.zeros((0, *hw), dtype=bool),
    )


def test_detector_map_through_rest_matches_pytorch(demo_server, scenes):
    offline = evaluate.coco_map(scenes, evaluate.predict_detections(load_trained("demo_digits_det"), scenes))
    requests = [{"url": f"/v1/models/{DETECTOR}/detect?score_threshold=0.0", "content": _png(s.image),
                 "headers": {"Content-Type": "image/png"}} for s in scenes]
    before = httpx.get(f"{demo_server.url}/metrics").text
    responses = asyncio.run(_post_concurrently(demo_server.url, requests))
    after = httpx.get(f"{demo_server.url}/metrics").text
    assert all(r.status_code == 200 for r in responses), next(r.text for r in responses if r.status_code != 200)
    served = [_served_detections(r, s.image.shape[:2]) for r, s in zip(responses, scenes, strict=True)]
    through_rest = evaluate.coco_map(scenes, served)

    print(f"on {SCENES} held-out scenes: REST {through_rest}, PyTorch {offline}")
    for metric in ("bbox_mAP", "segm_mAP"):
        assert abs(through_rest[metric] - offline[metric]) <= TOLERANCE, (metric, through_rest, offline)
    assert through_rest["bbox_AP50"] > 10.0
    # The scenes all preprocess to 128×128, so concurrent requests share runs (and answer as if alone).
    inferences = _metric(after, "nv_inference_count", DETECTOR) - _metric(before, "nv_inference_count", DETECTOR)
    executions = _metric(after, "nv_inference_exec_count", DETECTOR) - _metric(before, "nv_inference_exec_count",
                                                                                DETECTOR)
    assert inferences == SCENES and executions < inferences, "same-size detection requests should share batches"
