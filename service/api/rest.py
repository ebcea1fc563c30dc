"""The task REST API: /v1/models and /v1/models/{name}/classify|detect|segment|explain.

Each verb is one line into the shared request line (`service.runner.run_task`) with its task handler
(`service.tasks`); the query parameters are the handler's parameter model.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from service.api import schemas
from service.runner import run_task
from service.tasks import CLASSIFY, DETECT, EXPLAIN, SEGMENT, ClassifyParams, DetectParams, ExplainParams, TaskParams

router = APIRouter(prefix="/v1", tags=["tasks"])

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
            "application/json": {"schema": {"$ref": "#/components/schemas/ImagesRequest"}},
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


@router.get("/models", response_model=schemas.ModelList, summary="List served models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"models": [model.describe() for model in request.app.state.manager.models.values()]}


@router.get("/models/{name}", response_model=schemas.ModelDescription, responses=ERRORS_DOC,
            summary="Describe one model")
async def describe_model(name: str, request: Request) -> dict[str, Any]:
    return request.app.state.manager.get(name, ready=False).describe()


@router.post("/models/{name}/classify", response_model=schemas.ClassifyResponse, responses=ERRORS_DOC,
             openapi_extra=IMAGE_BODY_DOC, summary="Classify images (top-k classes)")
async def classify(name: str, request: Request, params: Annotated[ClassifyParams, Query()]) -> Response:
    return await run_task(request, name, CLASSIFY, params)


@router.post("/models/{name}/detect", response_model=schemas.DetectResponse, responses=ERRORS_DOC,
             openapi_extra=IMAGE_BODY_DOC, summary="Detect objects (boxes, labels, scores, COCO RLE masks)")
async def detect(name: str, request: Request, params: Annotated[DetectParams, Query()]) -> Response:
    return await run_task(request, name, DETECT, params)


@router.post("/models/{name}/segment", response_model=schemas.SegmentResponse, responses={
    **ERRORS_DOC, 200: {"content": {"image/png": {}}, "description": "JSON, or with `Accept: image/png` the "
                        "class-index map of a single image as a PNG (8-bit, 16-bit above 255 classes)"}},
             openapi_extra=IMAGE_BODY_DOC, summary="Semantic segmentation (per-class RLE or a PNG label map)")
async def segment(name: str, request: Request, params: Annotated[TaskParams, Query()]) -> Response:
    return await run_task(request, name, SEGMENT, params)


@router.post("/models/{name}/explain", response_model=schemas.ExplainResponse, responses=ERRORS_DOC,
             openapi_extra=IMAGE_BODY_DOC, summary="Cluster maps of every clustering stage (arrays + PNG overlays)")
async def explain(name: str, request: Request, params: Annotated[ExplainParams, Query()]) -> Response:
    return await run_task(request, name, EXPLAIN, params)
