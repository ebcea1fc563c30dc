"""Operations endpoints: liveness, readiness (only after every model warmed up) and Prometheus /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.api.schemas import LiveResponse, ReadyResponse
from service.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/v2/health/live", summary="Liveness: 200 while the process serves HTTP", response_model=LiveResponse)
async def live() -> JSONResponse:
    return JSONResponse({"live": True})


@router.get("/v2/health/ready", summary="Readiness: 200 once every model is loaded and warmed up, until shutdown "
            "starts; 503 otherwise (naming models that failed to load)", response_model=ReadyResponse,
            responses={503: {"model": ReadyResponse, "description": "not ready"}})
async def ready(request: Request) -> JSONResponse:
    manager = request.app.state.manager
    if manager.ready:
        return JSONResponse({"ready": True})
    body: dict[str, object] = {"ready": False}
    if manager.failed:
        body["failed"] = manager.failed
    if manager.shutting_down:
        body["shutting_down"] = True
    return JSONResponse(body, status_code=503)


@router.get("/metrics", summary="Prometheus metrics (Triton nv_* names + latency/batch histograms)",
            response_class=Response, responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
                                                      "description": "Prometheus text exposition format 0.0.4"}})
async def metrics(request: Request) -> Response:
    manager = request.app.state.manager
    body = request.app.state.metrics.render(model.stats for model in manager.models.values())
    return Response(body, media_type=CONTENT_TYPE)
