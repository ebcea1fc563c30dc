"""KServe v2 gRPC (GRPCInferenceService) on grpc.aio, sharing the model manager and v2 core with HTTP.

Tensors travel as `raw_input_contents` / `raw_output_contents` (the same encoding as the HTTP binary
extension), or typed `contents` on input. Errors are gRPC status codes mapped from the service errors.
"""

from __future__ import annotations

import logging
import time
import uuid

import grpc
import numpy as np
from fastapi import FastAPI
from google.protobuf import json_format

from service import v2_core
from service.errors import BadRequest, ServiceError
from service.grpc_gen import grpc_service_pb2 as pb
from service.grpc_gen import grpc_service_pb2_grpc as pb_grpc
from service.logging_setup import request_id_var
from service.v2_core import InferInput, RequestedOutput

log = logging.getLogger("paca.grpc")

_CONTENT_FIELDS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def _parameter(value: pb.InferParameter) -> object:
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind else None


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Method names are the protocol's (CamelCase), as the generated base class requires."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

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
            model = v2_core.find_model(self.manager, request.name, request.version, ready=False)
        except ServiceError as exc:
            await self._abort(context, exc)
        return pb.ModelReadyResponse(ready=model.ready)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name=v2_core.SERVER_NAME, version=v2_core.SERVER_VERSION,
                                         extensions=v2_core.EXTENSIONS)

    async def ModelMetadata(self, request, context):
        try:
            model = v2_core.find_model(self.manager, request.name, request.version)
        except ServiceError as exc:
            await self._abort(context, exc)
        metadata = v2_core.model_metadata(model)
        return json_format.ParseDict(metadata, pb.ModelMetadataResponse(), ignore_unknown_fields=True)

    async def ModelConfig(self, request, context):
        try:
            model = v2_core.find_model(self.manager, request.name, request.version)
        except ServiceError as exc:
            await self._abort(context, exc)
        config = json_format.ParseDict(v2_core.model_config(model), pb.ModelConfig(), ignore_unknown_fields=True)
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request, context):
        try:
            if request.name:
                models = [v2_core.find_model(self.manager, request.name, request.version, ready=False)]
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
        entries = v2_core.repository_index(self.manager)
        if request.ready:
            entries = [e for e in entries if e["state"] == "READY"]
        return json_format.ParseDict({"models": entries}, pb.RepositoryIndexResponse())

    async def ModelInfer(self, request, context):
        token = request_id_var.set(request.id or uuid.uuid4().hex)
        started = time.perf_counter()
        status = "OK"
        try:
            inputs = _inputs(request)
            requested = [
                RequestedOutput(o.name, classification=_classification(o)) for o in request.outputs
            ] or None
            timeout = request.parameters.get("timeout")
            timeout_us = float(_parameter(timeout)) if timeout is not None else None
            settings = self.app.state.settings
            _, outputs = await v2_core.infer(
                self.manager, self.app.state.pool, request.model_name, request.model_version, inputs, requested,
                timeout_us=timeout_us, max_image_pixels=settings.max_image_pixels,
            )
            response = pb.ModelInferResponse(model_name=request.model_name,
                                              model_version=request.model_version or "1", id=request.id)
            for output in outputs:
                tensor = response.outputs.add()
                tensor.name, tensor.datatype = output.name, output.datatype
                tensor.shape.extend(output.shape)
                response.raw_output_contents.append(v2_core.tensor_bytes(output))
            return response
        except ServiceError as exc:
            status = exc.grpc_code
            await self._abort(context, exc)
        finally:
            duration = time.perf_counter() - started
            if request.model_name in self.manager.models:
                self.app.state.metrics.request_latency.labels(model=request.model_name, api="grpc/infer",
                                                              status=status).observe(duration)
            log.info("grpc ModelInfer %s %s", request.model_name, status,
                     extra={"model": request.model_name, "duration_ms": round(duration * 1000, 2)})
            request_id_var.reset(token)


def _classification(output) -> int | None:
    value = output.parameters.get("classification")
    return None if value is None else int(_parameter(value))


def _inputs(request: pb.ModelInferRequest) -> list[InferInput]:
    raw_contents = list(request.raw_input_contents)
    if raw_contents and len(raw_contents) != len(request.inputs):
        raise BadRequest(f"{len(raw_contents)} raw_input_contents for {len(request.inputs)} inputs")
    inputs = []
    for index, tensor in enumerate(request.inputs):
        shape = [int(d) for d in tensor.shape]
        if any(d < 0 for d in shape):
            raise BadRequest(f"input {tensor.name!r}: shape {shape} must be non-negative")
        raw = raw_contents[index] if raw_contents else None
        if tensor.datatype == "BYTES":
            if raw is not None:
                elements = v2_core.split_bytes_elements(tensor.name, raw, shape)
            else:
                elements = list(tensor.contents.bytes_contents)
                if len(elements) != int(np.prod(shape)):
                    raise BadRequest(f"input {tensor.name!r}: {len(elements)} BYTES elements for shape {shape}")
            inputs.append(InferInput(tensor.name, "BYTES", shape, elements=elements))
            continue
        if raw is not None:
            array = v2_core.numeric_array(tensor.name, tensor.datatype, shape, raw=raw)
        else:
            field = _CONTENT_FIELDS.get(tensor.datatype)
            if field is None:
                raise BadRequest(f"input {tensor.name!r}: datatype {tensor.datatype!r} has no typed contents")
            array = v2_core.numeric_array(tensor.name, tensor.datatype, shape,
                                          data=list(getattr(tensor.contents, field)))
        inputs.append(InferInput(tensor.name, tensor.datatype, shape, array=array))
    return inputs


async def start_grpc_server(app: FastAPI, host: str, port: int) -> grpc.aio.Server:
    settings = app.state.settings
    server = grpc.aio.server(options=[
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
