"""What `paca loadtest` sends: real image files, through the REST forms or as binary KServe v2 tensors.

Every request is built before the clock starts (files read, base64 encoded, v2 tensors preprocessed), so the
client spends its time sending, not encoding. REST: classify as a multipart upload, detect as a raw image body,
segment as JSON base64, explain as multipart (the three ways the API takes images). v2 (HTTP binary tensor
extension) and gRPC (`raw_input_contents`): the FP32 `pixel_values` tensor, preprocessed on the client from
the model's own preprocessing spec (`paca.preprocess` in `/v2/models/{name}/config`), as perf_analyzer sends.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BUNDLED_IMAGES = Path(__file__).resolve().parent / "images"
IMAGE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
ENDPOINTS = ("classify", "detect", "segment", "explain", "v2", "grpc")
TASK_ENDPOINT = {"classification": "classify", "detection": "detect", "segmentation": "segment"}


class WorkloadError(ValueError):
    """The server, model, endpoint or images do not make a load test."""


@dataclass(frozen=True)
class ImageFile:
    name: str
    data: bytes
    mime: str


@dataclass(frozen=True)
class HttpRequest:
    """One prepared POST: path (with query), body, headers, and the image it carries."""

    path: str
    content: bytes
    headers: dict[str, str]
    image: str


@dataclass(frozen=True)
class GrpcRequest:
    message: object  # grpc_service_pb2.ModelInferRequest
    image: str


@dataclass
class Workload:
    model: str
    task: str
    endpoint: str
    requests: list[HttpRequest | GrpcRequest] = field(default_factory=list)

    @property
    def images(self) -> list[str]:
        return [r.image for r in self.requests]


def load_images(folder: Path | None, task: str) -> list[ImageFile]:
    """Image files from `folder`; the bundled samples by default (digits for classification, scenes otherwise)."""
    if folder is None:
        prefix = "digit_" if task == "classification" else "scene_"
        files = sorted(p for p in BUNDLED_IMAGES.iterdir() if p.name.startswith(prefix))
    else:
        if not folder.is_dir():
            raise WorkloadError(f"--images {folder}: not a folder")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    images = [ImageFile(p.name, p.read_bytes(), IMAGE_SUFFIXES[p.suffix.lower()]) for p in files
              if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise WorkloadError(f"no PNG or JPEG images in {folder or BUNDLED_IMAGES}")
    return images


def choose_model(models: list[dict], model: str | None, endpoint: str | None) -> tuple[dict, str]:
    """The served model and endpoint to load: as given, or the first model that fits the endpoint."""
    if model is not None:
        found = next((m for m in models if m["name"] == model), None)
        if found is None:
            raise WorkloadError(f"model {model!r} is not served; served: {', '.join(m['name'] for m in models)}")
    else:
        fitting = [m for m in models if endpoint in (None, "v2", "grpc") or TASK_ENDPOINT.get(m["task"]) == endpoint
                   or (endpoint == "explain" and m.get("explain_stages"))]
        if not fitting:
            raise WorkloadError(f"no served model fits endpoint {endpoint!r}")
        found = fitting[0]
    chosen = endpoint or TASK_ENDPOINT[found["task"]]
    if chosen in TASK_ENDPOINT.values() and TASK_ENDPOINT.get(found["task"]) != chosen:
        raise WorkloadError(f"model {found['name']!r} is a {found['task']} model; its REST endpoint is "
                            f"{TASK_ENDPOINT[found['task']]}, not {chosen}")
    if chosen == "explain" and not found.get("explain_stages"):
        raise WorkloadError(f"model {found['name']!r} exports no cluster maps: explain is not available")
    return found, chosen


def build_workload(client: httpx.Client, model: str | None, endpoint: str | None, images_dir: Path | None,
                   *, top_k: int = 5) -> Workload:
    """Ask the server what it serves, pick the model and endpoint, and prepare one request per image."""
    listing = client.get("/v1/models")
    if listing.status_code != 200:
        raise WorkloadError(f"GET /v1/models answered {listing.status_code}: {listing.text[:200]}")
    described, endpoint = choose_model(listing.json()["models"], model, endpoint)
    if not described.get("ready", True):
        raise WorkloadError(f"model {described['name']!r} is not ready")
    name, task = described["name"], described["task"]
    images = load_images(images_dir, task)
    workload = Workload(model=name, task=task, endpoint=endpoint)
    if endpoint in ("v2", "grpc"):
        output = v2_main_output(client, name)
        for image, tensor in zip(images, v2_tensors(client, name, images), strict=True):
            if endpoint == "v2":
                workload.requests.append(v2_http_request(name, tensor, output, image.name))
            else:
                workload.requests.append(GrpcRequest(grpc_request(name, tensor, output), image.name))
        return workload
    for image in images:
        workload.requests.append(rest_request(name, endpoint, image, top_k=top_k))
    return workload


# --- REST ---------------------------------------------------------------------------------------------------


def rest_request(model: str, endpoint: str, image: ImageFile, *, top_k: int = 5) -> HttpRequest:
    path = f"/v1/models/{model}/{endpoint}"
    if endpoint == "detect":  # raw image body
        return HttpRequest(path, image.data, {"Content-Type": image.mime}, image.name)
    if endpoint == "segment":  # JSON with base64
        body = json.dumps({"images": [{"b64": base64.b64encode(image.data).decode()}]}).encode()
        return HttpRequest(path, body, {"Content-Type": "application/json"}, image.name)
    if endpoint == "classify":
        path += f"?k={top_k}"
    body, content_type = multipart_upload("image", image.name, image.data, image.mime)  # classify, explain
    return HttpRequest(path, body, {"Content-Type": content_type}, image.name)


def multipart_upload(field_name: str, filename: str, data: bytes, mime: str) -> tuple[bytes, str]:
    """A multipart/form-data body with one file and its Content-Type (with the boundary), encoded once before
    the clock starts so the load loops send bytes instead of re-encoding a form per request."""
    encoded = httpx.Request("POST", "http://placeholder/", files={field_name: (filename, data, mime)})
    return encoded.read(), encoded.headers["Content-Type"]


# --- KServe v2 ------------------------------------------------------------------------------------------------


def v2_tensors(client: httpx.Client, model: str, images: list[ImageFile]):
    """Each image as the model's FP32 input (1, 3, H, W), preprocessed by the spec the artifact carries."""
    import numpy as np
    from PIL import Image

    from models.preprocess import preprocess_image
    from models.preprocess_spec import PreprocessSpec

    response = client.get(f"/v2/models/{model}/config")
    if response.status_code != 200:
        raise WorkloadError(f"GET /v2/models/{model}/config answered {response.status_code}")
    parameter = response.json().get("parameters", {}).get("paca.preprocess")
    if not parameter:
        raise WorkloadError(f"model {model!r} does not publish its preprocessing (paca.preprocess): use a REST "
                            f"endpoint, which preprocesses on the server")
    spec = PreprocessSpec.from_json(parameter["string_value"])
    tensors = []
    for image in images:
        with Image.open(io.BytesIO(image.data)) as opened:
            tensor, _ = preprocess_image(opened.convert("RGB"), spec)
        tensors.append(np.ascontiguousarray(tensor[None], dtype=np.float32))
    return tensors


def v2_main_output(client: httpx.Client, model: str) -> str:
    response = client.get(f"/v2/models/{model}")
    if response.status_code != 200:
        raise WorkloadError(f"GET /v2/models/{model} answered {response.status_code}")
    return response.json()["outputs"][0]["name"]


def v2_http_request(model: str, tensor, output: str, image: str) -> HttpRequest:
    """The binary tensor extension: JSON header, then the raw little-endian FP32 bytes."""
    data = tensor.astype("<f4").tobytes()
    header = json.dumps({
        "inputs": [{"name": "pixel_values", "datatype": "FP32", "shape": list(tensor.shape),
                    "parameters": {"binary_data_size": len(data)}}],
        "outputs": [{"name": output, "parameters": {"binary_data": True}}],
    }).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return HttpRequest(f"/v2/models/{model}/infer", header + data, headers, image)


def grpc_request(model: str, tensor, output: str):
    from service.grpc_gen import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    entry = request.inputs.add()
    entry.name, entry.datatype = "pixel_values", "FP32"
    entry.shape.extend(tensor.shape)
    request.outputs.add().name = output
    request.raw_input_contents.append(tensor.astype("<f4").tobytes())
    return request
