"""Locust load test for PaCa Serve: REST classify / detect / segment with real images and KServe v2 infer.

Each simulated user discovers the served models (GET /v1/models) and runs only the tasks whose task type is
served, so the same file drives the full demo server and a one-model test server. Images are real files
(loadtest/images: held-out demo digits and scenes, PNG and JPEG), sent three ways the API accepts:
multipart upload (classify), a raw image body (detect) and JSON base64 (segment). The v2 task sends a binary
FP32 tensor of the model's input shape (the binary tensor extension, as perf_analyzer does), random values,
to every fixed-input-size model (classification).

Needs only locust (no numpy/PIL), so it also runs in the stock locustio/locust image. Run it bounded and
against loopback with loadtest/run.py; environment:
    PACA_LOADTEST_IMAGES   image folder (default: loadtest/images next to this file)
    PACA_LOADTEST_TASKS    comma-separated subset of classify,detect,segment,v2 (default: all served)
"""

from __future__ import annotations

import base64
import json
import os
import random
import struct
from pathlib import Path

from locust import FastHttpUser, between, events, task

IMAGES_DIR = Path(os.environ.get("PACA_LOADTEST_IMAGES", Path(__file__).resolve().parent / "images"))
ALL_TASKS = ("classify", "detect", "segment", "v2")
ENABLED = {t.strip() for t in os.environ.get("PACA_LOADTEST_TASKS", ",".join(ALL_TASKS)).split(",") if t.strip()}
TASK_OF = {"classification": "classify", "detection": "detect", "segmentation": "segment"}
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _load_images(prefix: str) -> list[tuple[str, bytes, str]]:
    files = sorted(p for p in IMAGES_DIR.glob(f"{prefix}_*") if p.suffix.lower() in MIME)
    return [(p.name, p.read_bytes(), MIME[p.suffix.lower()]) for p in files]


DIGITS = _load_images("digit")
SCENES = _load_images("scene")


@events.init.add_listener
def _check_images(environment, **_kwargs) -> None:
    if not DIGITS or not SCENES:
        raise RuntimeError(f"no load-test images in {IMAGES_DIR} (expected digit_* and scene_* files)")


def _fp32_binary_request(input_name: str, shape: list[int], output_name: str, rng: random.Random) -> tuple[bytes, int]:
    count = 1
    for dim in shape:
        count *= dim
    tensor = struct.pack(f"<{count}f", *(rng.gauss(0.0, 1.0) for _ in range(count)))
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": input_name,
                    "datatype": "FP32",
                    "shape": shape,
                    "parameters": {"binary_data_size": len(tensor)},
                }
            ],
            "outputs": [{"name": output_name, "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + tensor, len(header)


class PacaUser(FastHttpUser):
    """One client: picks a served model per task and checks every response's shape, not only its status."""

    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.models: dict[str, str] = {}  # REST task -> model name
        self.v2_requests: list[tuple[str, bytes, int]] = []  # (model, body, header length)
        with self.client.get("/v1/models", name="/v1/models", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"model list: HTTP {response.status_code}")
                return
            served = response.json()["models"]
        for model in served:
            rest_task = TASK_OF.get(model["task"])
            if rest_task in ENABLED and rest_task not in self.models:
                self.models[rest_task] = model["name"]
        if "v2" in ENABLED:
            for model in served:
                self._prepare_v2(model["name"])

    def _prepare_v2(self, name: str) -> None:
        response = self.client.get(f"/v2/models/{name}", name="/v2/models/[model]")
        if response.status_code != 200:
            return
        metadata = response.json()
        tensor = metadata["inputs"][0]
        shape = [1 if d == -1 and i == 0 else d for i, d in enumerate(tensor["shape"])]
        # Variable height/width (segmentation, detection) has no single tensor shape to send: REST covers them.
        if tensor["datatype"] != "FP32" or any(d <= 0 for d in shape):
            return
        body, header_length = _fp32_binary_request(tensor["name"], shape, metadata["outputs"][0]["name"], self.rng)
        self.v2_requests.append((name, body, header_length))

    @task(4)
    def classify(self) -> None:
        model = self.models.get("classify")
        if model is None:
            return
        filename, data, mime = self.rng.choice(DIGITS)
        with self.client.post(
            f"/v1/models/{model}/classify?k=3",
            files={"image": (filename, data, mime)},
            name="/v1/models/[model]/classify (multipart)",
            catch_response=True,
        ) as response:
            self._expect(response, lambda body: len(body["results"]) == 1 and len(body["results"][0]["top_k"]) == 3)

    @task(2)
    def detect(self) -> None:
        model = self.models.get("detect")
        if model is None:
            return
        _, data, mime = self.rng.choice(SCENES)
        with self.client.post(
            f"/v1/models/{model}/detect",
            data=data,
            headers={"Content-Type": mime},
            name="/v1/models/[model]/detect (raw body)",
            catch_response=True,
        ) as response:
            self._expect(response, lambda body: isinstance(body["results"][0]["detections"], list))

    @task(2)
    def segment(self) -> None:
        model = self.models.get("segment")
        if model is None:
            return
        _, data, _ = self.rng.choice(SCENES)
        payload = {"images": [{"b64": base64.b64encode(data).decode()}]}
        with self.client.post(
            f"/v1/models/{model}/segment",
            json=payload,
            name="/v1/models/[model]/segment (json b64)",
            catch_response=True,
        ) as response:
            self._expect(response, lambda body: body["results"][0]["width"] > 0)

    @task(2)
    def v2_infer(self) -> None:
        if not self.v2_requests:
            return
        model, body, header_length = self.rng.choice(self.v2_requests)
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length)}
        with self.client.post(
            f"/v2/models/{model}/infer",
            data=body,
            headers=headers,
            name="/v2/models/[model]/infer (binary)",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            json_length = int(response.headers.get("Inference-Header-Content-Length", len(response.content)))
            outputs = json.loads(response.content[:json_length])["outputs"]
            if not outputs or outputs[0]["parameters"]["binary_data_size"] <= 0:
                response.failure("v2 response without binary output data")
            else:
                response.success()

    @staticmethod
    def _expect(response, check) -> None:
        if response.status_code != 200:
            response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
            return
        try:
            ok = check(response.json())
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            response.failure(f"malformed response: {exc!r}")
            return
        if ok:
            response.success()
        else:
            response.failure("unexpected response content")
