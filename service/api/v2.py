"""KServe v2 / Open Inference Protocol over HTTP, with Triton's extensions (binary tensors, /config, /stats,
classification, repository index), so tritonclient and perf_analyzer work unchanged.

Errors are `{"error": "..."}` (A.4); a JSON output never carries `parameters` (perf_analyzer rejects it, A.10).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service import v2_core
from service.api.images import read_body
from service.errors import BadRequest, ModelNotFound
from service.v2_core import InferInput, InferOutput, RequestedOutput

router = APIRouter(prefix="/v2", tags=["kserve-v2"])
HEADER_LENGTH = "inference-header-content-length"


def _manager(request: Request):
    return request.app.state.manager


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": v2_core.SERVER_NAME, "version": v2_core.SERVER_VERSION, "extensions": v2_core.EXTENSIONS}


@router.get("/models/stats", summary="Statistics of every model (Triton statistics extension)")
async def all_stats(request: Request) -> dict[str, Any]:
    return {"model_stats": [m.stats.as_triton_dict() for m in _manager(request).models.values()]}


@router.post("/repository/index", summary="Models in the repository and their state")
async def repository_index(request: Request) -> list[dict[str, str]]:
    return v2_core.repository_index(_manager(request))


def _loaded_model(request: Request, name: str, version: str | None):
    """A model whose artifact is loaded (metadata known), ready or still warming up."""
    model = v2_core.find_model(_manager(request), name, version, ready=False)
    if model.info is None:
        raise ModelNotFound(f"model {name!r} is still loading")
    return model


@router.get("/models/{name}", summary="Model metadata")
@router.get("/models/{name}/versions/{version}", summary="Model metadata (versioned)")
async def model_metadata(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    model = _loaded_model(request, name, version)
    return v2_core.model_metadata(model)


@router.get("/models/{name}/ready", summary="Model readiness: 200 ready, 400 not")
@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness (versioned)")
async def model_ready(name: str, request: Request, version: str | None = None) -> JSONResponse:
    model = v2_core.find_model(_manager(request), name, version, ready=False)
    return JSONResponse({"name": name, "ready": model.ready}, status_code=200 if model.ready else 400)


@router.get("/models/{name}/config", summary="Model configuration (Triton model_configuration extension)")
@router.get("/models/{name}/versions/{version}/config", summary="Model configuration (versioned)")
async def model_config(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    model = _loaded_model(request, name, version)
    return v2_core.model_config(model)


@router.get("/models/{name}/stats", summary="Model statistics (Triton statistics extension)")
@router.get("/models/{name}/versions/{version}/stats", summary="Model statistics (versioned)")
async def model_stats(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    model = v2_core.find_model(_manager(request), name, version, ready=False)
    return {"model_stats": [model.stats.as_triton_dict()]}


@router.post("/models/{name}/infer", summary="Inference (JSON or binary tensor data)")
@router.post("/models/{name}/versions/{version}/infer", summary="Inference (versioned)")
async def infer(name: str, request: Request, version: str | None = None) -> Response:
    settings = request.app.state.settings
    v2_core.find_model(_manager(request), name, version)  # unknown model → 404 before reading the body
    body = await read_body(request, settings.max_request_bytes)
    header, binary = _split_body(body, request.headers.get(HEADER_LENGTH))
    inputs, requested, binary_default = _parse_request(header, binary)
    timeout_us = _timeout_us(header.get("parameters"))
    _, outputs = await v2_core.infer(
        _manager(request), request.app.state.pool, name, version, inputs, requested,
        timeout_us=timeout_us, max_image_pixels=settings.max_image_pixels,
    )
    binary_by_name = {o.name: (o.binary if o.binary is not None else binary_default) for o in requested or []}
    return _encode_response(name, version, header.get("id"), outputs, binary_by_name, binary_default)


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        json_part, binary = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest(f"Inference-Header-Content-Length {header_length!r} is not an integer") from None
        if length < 0 or length > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {length} exceeds the body ({len(body)} bytes)")
        if length == 0:
            raise BadRequest("Inference-Header-Content-Length 0 (raw single-input body) is not supported; "
                             "send a JSON header")
        json_part, binary = body[:length], body[length:]
    try:
        header = json.loads(json_part)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"inference request header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise BadRequest("inference request must be a JSON object")
    return header, binary


def _parse_request(header: dict[str, Any], binary: bytes) -> tuple[list[InferInput], list[RequestedOutput] | None,
                                                                   bool]:
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("'inputs' must be a non-empty list")
    inputs, offset = [], 0
    for position, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise BadRequest(f"inputs[{position}] must be an object")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
            raise BadRequest(f"inputs[{position}] needs 'name' (string), 'datatype' (string) and 'shape' (list)")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise BadRequest(f"input {name!r}: shape {shape} must be a list of non-negative integers")
        parameters = item.get("parameters") or {}
        raw = None
        if "binary_data_size" in parameters:
            size = parameters["binary_data_size"]
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise BadRequest(f"input {name!r}: binary_data_size {size} exceeds the {len(binary) - offset} "
                                 "binary bytes left in the body")
            raw, offset = binary[offset:offset + size], offset + size
        if datatype == "BYTES":
            if raw is not None:
                elements = v2_core.split_bytes_elements(name, raw, shape)
            else:
                elements = _json_bytes_elements(name, item.get("data"), shape)
            inputs.append(InferInput(name, datatype, shape, elements=elements))
        else:
            array = v2_core.numeric_array(name, datatype, shape, data=item.get("data"), raw=raw)
            inputs.append(InferInput(name, datatype, shape, array=array))
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    parameters = header.get("parameters") or {}
    binary_default = bool(parameters.get("binary_data_output", False))
    requested = None
    if header.get("outputs"):
        requested = []
        for item in header["outputs"]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise BadRequest("each of 'outputs' needs a 'name'")
            params = item.get("parameters") or {}
            classification = params.get("classification")
            if classification is not None and (not isinstance(classification, int) or isinstance(classification,
                                                                                                   bool)):
                raise BadRequest(f"output {item['name']!r}: 'classification' must be an integer")
            binary_flag = params.get("binary_data")
            requested.append(RequestedOutput(item["name"], classification,
                                             bool(binary_flag) if binary_flag is not None else None))
    return inputs, requested, binary_default


def _json_bytes_elements(name: str, data: object, shape: list[int]) -> list[bytes]:
    """JSON BYTES elements are strings; encoded images must be base64 there."""
    import base64
    import binascii

    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: BYTES 'data' must be a list of base64 strings")
    flat: list[object] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    elements = []
    for index, item in enumerate(flat):
        if not isinstance(item, str):
            raise BadRequest(f"input {name!r}: element {index} is not a string")
        try:
            elements.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest(f"input {name!r}: element {index} is not valid base64") from None
    expected = 1
    for dim in shape:
        expected *= dim
    if len(elements) != expected:
        raise BadRequest(f"input {name!r}: {len(elements)} BYTES elements for shape {shape}")
    return elements


def _timeout_us(parameters: object) -> float | None:
    if not isinstance(parameters, dict) or "timeout" not in parameters:
        return None
    value = parameters["timeout"]
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise BadRequest("parameter 'timeout' must be a positive number of microseconds")
    return float(value)


def _encode_response(name: str, version: str | None, request_id: object, outputs: list[InferOutput],
                     binary_by_name: dict[str, bool | None], binary_default: bool) -> Response:
    header: dict[str, Any] = {"model_name": name, "model_version": version or "1"}
    if request_id is not None:
        header["id"] = request_id
    entries, chunks = [], []
    for output in outputs:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": output.shape}
        as_binary = binary_by_name.get(output.name, binary_default)
        if as_binary is None:
            as_binary = binary_default
        if as_binary:
            data = v2_core.tensor_bytes(output)
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        elif output.datatype == "BYTES":
            entry["data"] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                             for v in output.array.reshape(-1)]
        else:
            entry["data"] = output.array.reshape(-1).tolist()
        entries.append(entry)
    header["outputs"] = entries
    json_part = json.dumps(header, separators=(",", ":")).encode()
    if not chunks:
        return Response(json_part, media_type="application/json")
    return Response(json_part + b"".join(chunks), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(json_part))})
