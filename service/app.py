"""FastAPI app factory: routers, error mapping, request ids, and the load → warm-up → serve → drain lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Scope

from service import tracing
from service.admission import MIB, MemoryBudget
from service.api import schemas
from service.api.v2_fast import V2InferFastPath
from service.errors import ServiceError
from service.guard import RequestGuard
from service.logging_setup import drain_logs, request_id_var
from service.metrics import Metrics
from service.model_runtime import ModelManager
from service.repository import RepositoryConfig, load_repository
from service.request_context import RequestContextMiddleware, error_body
from service.settings import ServerSettings
from service.timing import RequestTimings

log = logging.getLogger("paca.server")
access_log = logging.getLogger("paca.access")

API_DESCRIPTION = """
Serves PaCa-ViT classification, detection and segmentation models with a dynamic batcher.

* `/v1/...`: task API — send images, get top-k classes, detections with COCO RLE masks, segmentation
  classes (or a PNG label map) and cluster-map explanations.
* `/v2/...`: KServe v2 / Open Inference Protocol (Triton-compatible: binary tensors, `/config`, `/stats`,
  classification extension) for tritonclient and perf_analyzer.

Errors are `{"error": "...", "request_id": "..."}` with a 4xx/5xx status; every response carries
`X-Request-ID`. With API keys configured, send `Authorization: Bearer <key>` or `X-API-Key: <key>`.
"""


def create_app(settings: ServerSettings | None = None, repository: RepositoryConfig | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    repository = repository or load_repository(settings.config)
    if settings.tracing and not tracing.enabled():  # (tests install an in-memory exporter first)
        tracing.configure(True)
    metrics = Metrics()
    manager = ModelManager(repository, metrics=metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Models load and warm up in the background: /v2/health/live answers at once, ready turns 200 after.
        app.state.pool = ThreadPoolExecutor(settings.preprocess_threads, thread_name_prefix="preprocess")
        servers: list = []
        startup = asyncio.create_task(_start_models(app, manager, settings, servers), name="load-models")
        try:
            yield
        finally:
            log.info("shutting down: draining queues (up to %.0f s)", settings.exit_timeout_s)
            if not startup.done():
                startup.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await startup
            for server in servers:
                await server.stop(settings.exit_timeout_s)
            await manager.stop(settings.exit_timeout_s)
            app.state.pool.shutdown(wait=True)
            log.info("stopped")
            drain_logs()

    # FastAPI's native OpenTelemetry hooks cost on every request even with no-op providers; off (Prometheus
    # metrics and our own logs cover them).
    app = PacaApp(title="PaCa Serve", version="0.1.0", description=API_DESCRIPTION, lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.settings = settings
    app.state.manager = manager
    app.state.metrics = metrics
    app.state.memory_budget = MemoryBudget(settings.max_inflight_memory_mb * MIB)
    metrics.track_inflight(lambda: app.state.guard.inflight if hasattr(app.state, "guard") else 0,
                           lambda: app.state.memory_budget.used)
    app.state.exit_code = 0

    from service.api import ops, rest, v2_http

    app.include_router(ops.router)
    app.include_router(rest.router)
    app.include_router(v2_http.router)
    _install_error_handlers(app)
    return app


class PacaApp(FastAPI):
    """FastAPI with the server's own layers outside FastAPI's middleware stack: the request context (ids,
    timings, logs, the last-resort 500), the guard (keys, limits) and the v2 inference fast path. Inference
    requests then pay for FastAPI's machinery only where they use its routing and validation."""

    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema, told the truth: request errors are 400 `ErrorResponse` (the handler turns FastAPI's
        validation errors into them), never 422; request bodies parsed by hand are declared as components."""
        if self.openapi_schema:
            return self.openapi_schema
        schema = super().openapi()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (schemas.ImagesRequest, schemas.V2InferenceRequest):
            definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(definition.pop("$defs", {}))
            components[model.__name__] = definition
        bad_request = {"description": "bad request: the error names the field or value",
                       "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
        for operations in schema["paths"].values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if responses.pop("422", None) is not None:
                    responses.setdefault("400", bad_request)
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        self.openapi_schema = schema
        return schema

    def build_middleware_stack(self) -> ASGIApp:
        fastapi_stack = super().build_middleware_stack()
        guarded = self.state.guard = RequestGuard(V2InferFastPath(fastapi_stack), settings=self.state.settings)
        settings = self.state.settings
        return RequestContextMiddleware(guarded, observe=_observe, traced=settings.tracing and tracing.enabled())


async def _start_models(app: FastAPI, manager: ModelManager, settings: ServerSettings, servers: list) -> None:
    try:
        if settings.grpc_port:  # up before the models, like HTTP: ServerLive answers, ServerReady says false
            from service.api.v2_grpc import start_grpc_server

            servers.append(await start_grpc_server(app, settings.host, settings.grpc_port))
        await manager.start(exit_on_error=settings.exit_on_error)
    except Exception as exc:
        log.error("exiting: a model failed to load: %s (set PACA_EXIT_ON_ERROR=false to serve the others)", exc)
        app.state.exit_code = 1
        request_exit = getattr(app.state, "request_exit", None)  # set by `paca serve`; else a plain SIGTERM
        if request_exit is not None:
            request_exit()
        else:
            os.kill(os.getpid(), signal.SIGTERM)
        return
    if manager.failed:
        log.error("serving %d of %d models; failed: %s", len(manager.models) - len(manager.failed),
                  len(manager.models), ", ".join(sorted(manager.failed)))
        return
    log.info("ready: %d models on http://%s:%s", len(manager.models), settings.host, settings.port)


def _error_response(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(message), status_code=status, headers=headers, media_type="application/json")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> Response:
        if exc.status_code >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.message)
        return _error_response(request, exc.status_code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _error_response(request, 400, f"invalid request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error_response(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        """Starlette answers with this, then re-raises; the request context logs the traceback once."""
        return _error_response(request, 500, "internal error; the server log has the details under request id "
                                             f"{request_id_var.get()}")


def _observe(scope: Scope, status: int, duration_s: float, timings: RequestTimings) -> None:
    """Latency histograms per model and API (and per phase of the request line), for inference routes only."""
    parts = scope["path"].strip("/").split("/")
    if len(parts) >= 4 and parts[0] in ("v1", "v2") and parts[1] == "models" and scope["method"] == "POST":
        model = parts[2]
        if model in scope["app"].state.manager.models:
            scope["app"].state.metrics.observe_request(model, f"{parts[0]}/{parts[-1]}", str(status), duration_s,
                                                       timings.phases)
