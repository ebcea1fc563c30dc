"""KServe v2 gRPC (GRPCInferenceService) on grpc.aio, sharing the model manager, codec and inference with HTTP.

Tensors travel as `raw_input_contents` / `raw_output_contents` (the same encoding as the HTTP binary
extension), or typed `contents` on input. Errors are gRPC status codes mapped from the service errors.
"""

from __future__ import annotations

import logging
import time

import grpc
from fastapi import FastAPI
from google.protobuf import json_format

from export.triton_proto import model_config_pb2
from service import tracing
from service.auth import ApiKeyInterceptor
from service.errors import ServiceError
from service.grpc_gen import grpc_service_pb2 as pb
from service.grpc_gen import grpc_service_pb2_grpc as pb_grpc
from service.logging_setup import request_id_var
from service.request_context import choose_request_id
from service.timing import RequestTimings, request_timings
from service.v2 import codec, inference
from service.v2.model_config import (
    EXTENSIONS,
    SERVER_NAME,
    SERVER_VERSION,
    model_metadata,
    repository_index,
    served_model_config,
)

log = logging.getLogger("paca.grpc")


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Method names are the protocol's (CamelCase), as the generated base class requires."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.traced = app.state.settings.tracing and tracing.enabled()

    @property
    def manager(self):
        return self.app.state.manager

    async def _abort(self, context: grpc.aio.ServicerContext, exc: ServiceError) -> None:
        await context.abort(getattr(grpc.StatusCode, exc.grpc_code), exc.message)

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=bool(self.manager.ready))

    async def ModelReady(self, request, context):
        try:
            model = inference.find_model(self.manager, request.name, request.version, ready=False)
        except ServiceError as exc:
            await self._abort(context, exc)
        return pb.ModelReadyResponse(ready=model.ready)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)

    async def ModelMetadata(self, request, context):
        try:
            model = inference.find_model(self.manager, request.name, request.version)
        except ServiceError as exc:
            await self._abort(context, exc)
        return json_format.ParseDict(model_metadata(model), pb.ModelMetadataResponse(), ignore_unknown_fields=True)

    async def ModelConfig(self, request, context):
        try:
            model = inference.find_model(self.manager, request.name, request.version)
        except ServiceError as exc:
            await self._abort(context, exc)
        config = json_format.ParseDict(served_model_config(model), model_config_pb2.ModelConfig(),
                                       ignore_unknown_fields=True)
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request, context):
        try:
            if request.name:
                models = [inference.find_model(self.manager, request.name, request.version, ready=False)]
            else:
                models = list(self.manager.models.values())
        except ServiceError as exc:
            await self._abort(context, exc)
        response = pb.ModelStatisticsResponse()
        for model in models:
            entry = response.model_stats.add()
            json_format.ParseDict(model.stats.as_triton_dict(), entry, ignore_unknown_fields=True)
        return response

    async def RepositoryIndex(self, request, context):
        entries = repository_index(self.manager)
        if request.ready:
            entries = [e for e in entries if e["state"] == "READY"]
        return json_format.ParseDict({"models": entries}, pb.RepositoryIndexResponse())

    async def ModelInfer(self, request, context):
        token = request_id_var.set(choose_request_id(request.id))
        timings = RequestTimings()
        timings_token = request_timings.set(timings)
        started = time.perf_counter()
        status = "OK"
        state = self.app.state
        span = None
        if self.traced:
            span = tracing.start_rpc_span("ModelInfer", dict(context.invocation_metadata() or ()),
                                          request_id_var.get(), request.model_name)
            timings.trace = span.get_span_context()
            await context.send_initial_metadata((("traceparent", tracing.traceparent(span)),))
        try:
            infer_request = codec.decode_grpc(request)
            _, outputs = await inference.infer(
                self.manager, state.pool, request.model_name, request.model_version, infer_request,
                settings=state.settings, budget=state.memory_budget, arrived=time.monotonic(),
            )
            response = pb.ModelInferResponse(model_name=request.model_name,
                                             model_version=request.model_version or "1", id=request.id)
            return codec.encode_grpc(response, outputs)
        except ServiceError as exc:
            status = exc.grpc_code
            await self._abort(context, exc)
        except grpc.aio.AbortError:
            raise
        except Exception:
            status = "INTERNAL"
            log.exception("grpc ModelInfer %s failed", request.model_name)
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"internal error (request id {request_id_var.get()}); see the server log")
        finally:
            duration = time.perf_counter() - started
            if request.model_name in self.manager.models:
                self.app.state.metrics.request_latency.labels(model=request.model_name, api="grpc/infer",
                                                              status=status).observe(duration)
            log.info("grpc ModelInfer %s %s", request.model_name, status,
                     extra={"model": request.model_name, "duration_ms": round(duration * 1000, 2)})
            if span is not None:
                tracing.end_request_span(span, timings, grpc_status=status)
            request_timings.reset(timings_token)
            request_id_var.reset(token)


async def start_grpc_server(app: FastAPI, host: str, port: int) -> grpc.aio.Server:
    settings = app.state.settings
    interceptors = [ApiKeyInterceptor(settings)] if settings.api_keys else []
    server = grpc.aio.server(interceptors=interceptors, options=[
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.max_send_message_length", 256 << 20),
    ])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(app), server)
    address = f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot bind gRPC to {address}")
    await server.start()
    log.info("gRPC listening on %s", address)
    return server
