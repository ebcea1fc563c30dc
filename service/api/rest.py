"""The task REST API: /v1/models and /v1/models/{name}/classify|detect|segment|explain.

Each endpoint is the same straight line: read images → decode + preprocess (thread pool) → one batcher
request per image (they batch with everyone else's) → postprocess (thread pool) → JSON.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from service import pipeline
from service.api import schemas
from service.api.images import read_images
from service.errors import BadRequest, NotAcceptable
from service.model_runtime import ModelManager, ServedModel
from service.pipeline import PreparedImage
from service.settings import ServerSettings

router = APIRouter(prefix="/v1", tags=["tasks"])

T = TypeVar("T")

IMAGE_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One or more images: multipart field `image` (repeatable), a raw image body, or JSON.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    "required": ["image"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": schemas.ImagesRequest.model_json_schema()},
        },
    }
}
ERRORS_DOC: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorResponse, "description": text}
    for code, text in {
        400: "bad input (not an image, corrupt, wrong field, bad JSON/base64, wrong task endpoint)",
        404: "unknown model",
        413: "body or image too large",
        415: "unsupported Content-Type",
        503: "queue full (Retry-After) or not ready",
        504: "queue deadline passed before the request ran",
    }.items()
}
TIMEOUT_QUERY = Query(None, gt=0, description="queue deadline for this request (may only lower the model's)")


def _state(request: Request) -> tuple[ModelManager, ServerSettings]:
    return request.app.state.manager, request.app.state.settings


async def _in_pool(request: Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app.state.pool, functools.partial(fn, *args, **kwargs))


async def _prepare_all(request: Request, model: ServedModel) -> list[PreparedImage]:
    settings = request.app.state.settings
    images = await read_images(request, settings)
    many = len(images) > 1
    jobs = [
        _in_pool(request, pipeline.prepare_image, data, model.info, max_pixels=settings.max_image_pixels,
                 what=f"image {i + 1}" if many else "image")
        for i, data in enumerate(images)
    ]
    return list(await asyncio.gather(*jobs))


async def _infer_all(
    model: ServedModel, prepared: Sequence[PreparedImage], outputs: Sequence[str], timeout_ms: float | None
) -> list[dict[str, Any]]:
    timeout_s = timeout_ms / 1000.0 if timeout_ms is not None else None
    return list(await asyncio.gather(*(
        model.infer({"pixel_values": p.pixel_values}, outputs, timeout_s=timeout_s) for p in prepared
    )))


@router.get("/models", response_model=schemas.ModelList, summary="List served models")
async def list_models(request: Request) -> dict[str, Any]:
    manager, _ = _state(request)
    return {"models": [model.describe() for model in manager.models.values()]}


@router.get("/models/{name}", response_model=schemas.ModelDescription, responses=ERRORS_DOC,
            summary="Describe one model")
async def describe_model(name: str, request: Request) -> dict[str, Any]:
    manager, _ = _state(request)
    return manager.get(name, ready=False).describe()


@router.post("/models/{name}/classify", response_model=schemas.ClassifyResponse, responses=ERRORS_DOC,
             openapi_extra=IMAGE_BODY_DOC, summary="Classify images (top-k classes)")
async def classify(
    name: str,
    request: Request,
    k: int = Query(5, ge=1, le=1000, description="classes to return per image"),
    timeout_ms: float | None = TIMEOUT_QUERY,
) -> JSONResponse:
    manager, _ = _state(request)
    model = manager.get(name, task="classification")
    prepared = await _prepare_all(request, model)
    outputs = await _infer_all(model, prepared, ("logits",), timeout_ms)
    results = [pipeline.classification_result(o, model.info, k) for o in outputs]
    return JSONResponse({"model": name, "results": results})


@router.post("/models/{name}/detect", response_model=schemas.DetectResponse, responses=ERRORS_DOC,
             openapi_extra=IMAGE_BODY_DOC, summary="Detect objects (boxes, labels, scores, COCO RLE masks)")
async def detect(
    name: str,
    request: Request,
    score_threshold: float = Query(0.3, ge=0.0, le=1.0, description="drop detections scoring below this"),
    masks: bool = Query(True, description="include instance masks as COCO RLE"),
    timeout_ms: float | None = TIMEOUT_QUERY,
) -> JSONResponse:
    manager, _ = _state(request)
    model = manager.get(name, task="detection")
    prepared = await _prepare_all(request, model)
    wanted = ("boxes", "scores", "labels", "mask_probs") if masks else ("boxes", "scores", "labels")
    outputs = await _infer_all(model, prepared, wanted, timeout_ms)
    results = await asyncio.gather(*(
        _in_pool(request, pipeline.detection_result, o, p.meta, model.info, score_threshold=score_threshold,
                 with_masks=masks)
        for o, p in zip(outputs, prepared, strict=True)
    ))
    return JSONResponse({"model": name, "results": list(results)})


@router.post("/models/{name}/segment", response_model=schemas.SegmentResponse, responses={
    **ERRORS_DOC, 200: {"content": {"image/png": {}}, "description": "JSON, or with `Accept: image/png` the "
                        "class-index map of a single image as a PNG (8-bit, 16-bit above 255 classes)"}},
             openapi_extra=IMAGE_BODY_DOC, summary="Semantic segmentation (per-class RLE or a PNG label map)")
async def segment(name: str, request: Request, timeout_ms: float | None = TIMEOUT_QUERY) -> Response:
    manager, _ = _state(request)
    model = manager.get(name, task="segmentation")
    want_png = _wants_png(request)
    prepared = await _prepare_all(request, model)
    if want_png and len(prepared) != 1:
        raise BadRequest(f"Accept: image/png returns one label map; send exactly one image (got {len(prepared)})")
    outputs = await _infer_all(model, prepared, ("seg_logits",), timeout_ms)
    label_maps = await asyncio.gather(*(
        _in_pool(request, pipeline.segmentation_label_map, o, p.meta) for o, p in zip(outputs, prepared, strict=True)
    ))
    if want_png:
        png = await _in_pool(request, pipeline.label_map_png, label_maps[0])
        return Response(png, media_type="image/png")
    results = await asyncio.gather(*(_in_pool(request, pipeline.segmentation_result, m, model.info)
                                     for m in label_maps))
    return JSONResponse({"model": name, "results": list(results)})


@router.post("/models/{name}/explain", response_model=schemas.ExplainResponse, responses=ERRORS_DOC,
             openapi_extra=IMAGE_BODY_DOC, summary="Cluster maps of every clustering stage (arrays + PNG overlays)")
async def explain(
    name: str,
    request: Request,
    alpha: float = Query(0.55, ge=0.0, le=1.0, description="overlay opacity"),
    timeout_ms: float | None = TIMEOUT_QUERY,
) -> JSONResponse:
    manager, _ = _state(request)
    model = manager.get(name)
    if not model.info.cluster_outputs:
        raise BadRequest(f"model {name!r} exports no cluster maps (no clusters_stage* outputs)")
    prepared = await _prepare_all(request, model)
    outputs = await _infer_all(model, prepared, model.info.cluster_outputs, timeout_ms)
    results = await asyncio.gather(*(
        _in_pool(request, pipeline.explain_result, o, p, overlay_alpha=alpha)
        for o, p in zip(outputs, prepared, strict=True)
    ))
    return JSONResponse({"model": name, "results": list(results)})


def _wants_png(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    media = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    if "image/png" in media:
        return True
    if media and not any(m in ("application/json", "*/*", "application/*") for m in media):
        raise NotAcceptable(f"cannot produce {accept!r}; segment returns application/json or image/png")
    return False
