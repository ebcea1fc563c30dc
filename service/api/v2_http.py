"""KServe v2 / Open Inference Protocol over HTTP, with Triton's extensions (binary tensors, /config, /stats,
classification, repository index), so tritonclient and perf_analyzer work unchanged.

Only the transport lives here: the wire codec is `service.v2.codec`, inference `service.v2.inference`, the
model descriptions `service.v2.model_config`. Errors are `{"error": "..."}`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.api import schemas
from service.api.images import read_body
from service.runner import in_pool
from service.timing import current, record_all
from service.v2 import codec, inference
from service.v2.model_config import (
    EXTENSIONS,
    SERVER_NAME,
    SERVER_VERSION,
    model_metadata,
    repository_index,
    served_model_config,
)

router = APIRouter(prefix="/v2", tags=["kserve-v2"])
LARGE_BODY = 256 << 10


def _manager(request: Request):
    return request.app.state.manager


ERRORS = {code: {"model": schemas.ErrorResponse, "description": text} for code, text in {
    400: "bad request (wrong field, type, shape or datatype)", 401: "API key missing", 403: "API key not valid",
    404: "unknown model or version", 413: "body or images too large", 503: "queue full, overloaded or not ready "
    "(Retry-After)", 504: "the request's deadline passed before it ran"}.items()}
INFER_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/V2InferenceRequest"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}, "description": ""},
}, "description": "A JSON inference request; with the binary tensor extension the JSON header is followed by "
   "the tensors' bytes and its length is in `Inference-Header-Content-Length`."}}


@router.get("", summary="Server metadata", response_model=schemas.V2ServerMetadata)
async def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}


@router.get("/models/stats", summary="Statistics of every model (Triton statistics extension)",
            response_model=schemas.V2Statistics)
async def all_stats(request: Request) -> dict[str, Any]:
    return {"model_stats": [m.stats.as_triton_dict() for m in _manager(request).models.values()]}


@router.post("/repository/index", summary="Models in the repository and their state",
             response_model=list[schemas.V2RepositoryModel])
async def index(request: Request) -> list[dict[str, str]]:
    return repository_index(_manager(request))


@router.get("/models/{name}", summary="Model metadata", response_model=schemas.V2ModelMetadata,
            response_model_exclude_none=True, responses=ERRORS)
@router.get("/models/{name}/versions/{version}", summary="Model metadata (versioned)",
            response_model=schemas.V2ModelMetadata, response_model_exclude_none=True, responses=ERRORS)
async def metadata(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    return model_metadata(inference.loaded_model(_manager(request), name, version))


@router.get("/models/{name}/ready", summary="Model readiness: 200 ready, 400 not",
            response_model=schemas.V2ModelReady, responses=ERRORS)
@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness (versioned)",
            response_model=schemas.V2ModelReady, responses=ERRORS)
async def model_ready(name: str, request: Request, version: str | None = None) -> JSONResponse:
    model = inference.find_model(_manager(request), name, version, ready=False)
    return JSONResponse({"name": name, "ready": model.ready}, status_code=200 if model.ready else 400)


@router.get("/models/{name}/config", summary="Model configuration (Triton model_configuration extension: "
            "Triton's ModelConfig as JSON)", response_model=dict[str, Any], responses=ERRORS)
@router.get("/models/{name}/versions/{version}/config", summary="Model configuration (versioned)",
            response_model=dict[str, Any], responses=ERRORS)
async def config(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    return served_model_config(inference.loaded_model(_manager(request), name, version))


@router.get("/models/{name}/stats", summary="Model statistics (Triton statistics extension)",
            response_model=schemas.V2Statistics, responses=ERRORS)
@router.get("/models/{name}/versions/{version}/stats", summary="Model statistics (versioned)",
            response_model=schemas.V2Statistics, responses=ERRORS)
async def model_stats(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    model = inference.find_model(_manager(request), name, version, ready=False)
    return {"model_stats": [model.stats.as_triton_dict()]}


INFER_RESPONSES: dict[int | str, dict[str, Any]] = {**ERRORS, 200: {
    "model": schemas.V2InferenceResponse, "description": "JSON; or, when any output is asked for as binary, a JSON "
    "header (its length in `Inference-Header-Content-Length`) followed by the tensors' bytes",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


@router.post("/models/{name}/infer", summary="Inference (JSON or binary tensor data)", openapi_extra=INFER_BODY,
             responses=INFER_RESPONSES)
@router.post("/models/{name}/versions/{version}/infer", summary="Inference (versioned)", openapi_extra=INFER_BODY,
             responses=INFER_RESPONSES)
async def infer(name: str, request: Request, version: str | None = None) -> Response:
    """Documents the route; requests are served by `V2InferFastPath` (same `handle_infer`) before routing."""
    limit = request.app.state.settings.max_request_bytes
    content, headers = await handle_infer(request.app.state, name, version, lambda: read_body(request, limit),
                                          request.headers.get(codec.HEADER_LENGTH))
    return Response(content, headers=headers)


async def handle_infer(state: Any, name: str, version: str | None, read: Callable[[], Awaitable[bytes]],
                       header_length: str | None) -> tuple[bytes, dict[str, str]]:
    """One v2 HTTP inference: the model's place in the queue is held while the body is read (so the batcher
    knows a request is on its way), the body is decoded and validated, then inferred and encoded."""
    arrived = time.monotonic()
    model = inference.find_model(state.manager, name, version)  # unknown model → 404 before reading the body
    with model.reserve(1) as reservation:  # a full queue refuses before the body is read
        body = await read()
        cost = state.memory_budget.acquire(2 * len(body))  # the body and the tensor made from it
        try:
            if len(body) > LARGE_BODY:  # JSON parsing of big bodies stays off the event loop
                infer_request = await in_pool(state.pool, codec.decode_http, body, header_length)
            else:
                infer_request = codec.decode_http(body, header_length)
            _, outputs = await inference.infer(state.manager, state.pool, name, version, infer_request,
                                               settings=state.settings, budget=state.memory_budget,
                                               arrived=arrived, reservation=reservation)
        finally:
            state.memory_budget.release(cost)
    started = time.time_ns()
    encoded = codec.encode_http(name, version, infer_request, outputs)
    record_all(current(), [("encode", started, time.time_ns())])
    return encoded
