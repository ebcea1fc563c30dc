"""KServe v2 / Open Inference Protocol over HTTP, with Triton's extensions (binary tensors, /config, /stats,
classification, repository index), so tritonclient and perf_analyzer work unchanged.

Only the transport lives here: the wire codec is `service.v2.codec`, inference `service.v2.inference`, the
model descriptions `service.v2.model_config`. Errors are `{"error": "..."}`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.api.images import read_body
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


def _manager(request: Request):
    return request.app.state.manager


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}


@router.get("/models/stats", summary="Statistics of every model (Triton statistics extension)")
async def all_stats(request: Request) -> dict[str, Any]:
    return {"model_stats": [m.stats.as_triton_dict() for m in _manager(request).models.values()]}


@router.post("/repository/index", summary="Models in the repository and their state")
async def index(request: Request) -> list[dict[str, str]]:
    return repository_index(_manager(request))


@router.get("/models/{name}", summary="Model metadata")
@router.get("/models/{name}/versions/{version}", summary="Model metadata (versioned)")
async def metadata(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    return model_metadata(inference.loaded_model(_manager(request), name, version))


@router.get("/models/{name}/ready", summary="Model readiness: 200 ready, 400 not")
@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness (versioned)")
async def model_ready(name: str, request: Request, version: str | None = None) -> JSONResponse:
    model = inference.find_model(_manager(request), name, version, ready=False)
    return JSONResponse({"name": name, "ready": model.ready}, status_code=200 if model.ready else 400)


@router.get("/models/{name}/config", summary="Model configuration (Triton model_configuration extension)")
@router.get("/models/{name}/versions/{version}/config", summary="Model configuration (versioned)")
async def config(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    return served_model_config(inference.loaded_model(_manager(request), name, version))


@router.get("/models/{name}/stats", summary="Model statistics (Triton statistics extension)")
@router.get("/models/{name}/versions/{version}/stats", summary="Model statistics (versioned)")
async def model_stats(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    model = inference.find_model(_manager(request), name, version, ready=False)
    return {"model_stats": [model.stats.as_triton_dict()]}


@router.post("/models/{name}/infer", summary="Inference (JSON or binary tensor data)")
@router.post("/models/{name}/versions/{version}/infer", summary="Inference (versioned)")
async def infer(name: str, request: Request, version: str | None = None) -> Response:
    settings = request.app.state.settings
    inference.find_model(_manager(request), name, version)  # unknown model → 404 before reading the body
    body = await read_body(request, settings.max_request_bytes)
    infer_request = codec.decode_http(body, request.headers.get(codec.HEADER_LENGTH))
    _, outputs = await inference.infer(_manager(request), request.app.state.pool, name, version, infer_request,
                                       max_image_pixels=settings.max_image_pixels)
    content, headers = codec.encode_http(name, version, infer_request, outputs)
    return Response(content, headers=headers)
