"""KServe v2 wire formats ↔ one transport-free request/response: HTTP JSON (+ Triton's binary tensor
extension) and gRPC `ModelInferRequest`/`ModelInferResponse` both decode to `InferRequest` and encode
from `InferOutput` here, so validation is written once.

A JSON output never carries `parameters` other than `binary_data_size` (perf_analyzer rejects others).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.backends.base import V2_DATATYPES
from service.errors import BadRequest

HEADER_LENGTH = "inference-header-content-length"
GRPC_CONTENT_FIELDS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


@dataclass
class InferInput:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray | None = None  # numeric tensors
    elements: list[bytes] | None = None  # BYTES tensors


@dataclass
class RequestedOutput:
    name: str
    classification: int | None = None
    binary: bool | None = None


@dataclass
class InferRequest:
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None  # None: every output
    id: str | None = None
    timeout_us: float | None = None
    binary_default: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferOutput:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray  # numeric, or dtype=object holding bytes for BYTES


# ------------------------------------------------------------------------------------------------ tensors
def element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def numeric_array(name: str, datatype: str, shape: Sequence[int], *, data: object = None,
                  raw: bytes | None = None) -> np.ndarray:
    """A v2 tensor from JSON `data` (flat or nested) or raw little-endian bytes, checked against `shape`."""
    if datatype not in V2_DATATYPES:
        raise BadRequest(f"input {name!r}: unsupported datatype {datatype!r}")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise BadRequest(f"input {name!r}: shape {list(shape)} must be non-negative integers")
    dtype = V2_DATATYPES[datatype].newbyteorder("<")
    count = element_count(shape)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise BadRequest(f"input {name!r}: {len(raw)} bytes of binary data, but shape {list(shape)} × "
                             f"{datatype} needs {count * dtype.itemsize}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=True)
    if data is None:
        raise BadRequest(f"input {name!r} has neither 'data' nor binary data")
    try:
        flat = np.asarray(data, dtype=np.float64 if datatype.startswith(("FP", "BF")) else None).reshape(-1)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"input {name!r}: 'data' is not a (nested) list of numbers: {exc}") from None
    if flat.size != count:
        raise BadRequest(f"input {name!r}: {flat.size} values for shape {list(shape)} ({count} expected)")
    try:
        return flat.astype(dtype.newbyteorder("="), casting="unsafe").reshape(shape)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"input {name!r}: values do not fit {datatype}: {exc}") from None


def split_bytes_elements(name: str, raw: bytes, shape: Sequence[int]) -> list[bytes]:
    """BYTES binary encoding: each element is a 4-byte little-endian length and that many bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"input {name!r}: truncated BYTES length prefix")
        length = int.from_bytes(raw[offset:offset + 4], "little")
        offset += 4
        if offset + length > len(raw):
            raise BadRequest(f"input {name!r}: BYTES element of {length} bytes runs past the data")
        elements.append(raw[offset:offset + length])
        offset += length
    if len(elements) != element_count(shape):
        raise BadRequest(f"input {name!r}: {len(elements)} BYTES elements for shape {list(shape)}")
    return elements


def json_bytes_elements(name: str, data: object, shape: Sequence[int]) -> list[bytes]:
    """JSON BYTES elements are strings; encoded images must be base64 there."""
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
    if len(elements) != element_count(shape):
        raise BadRequest(f"input {name!r}: {len(elements)} BYTES elements for shape {list(shape)}")
    return elements


def encode_bytes_elements(values: np.ndarray) -> bytes:
    parts = []
    for value in values.reshape(-1):
        data = value if isinstance(value, bytes) else str(value).encode()
        parts.append(len(data).to_bytes(4, "little") + data)
    return b"".join(parts)


def tensor_bytes(output: InferOutput) -> bytes:
    if output.datatype == "BYTES":
        return encode_bytes_elements(output.array)
    return np.ascontiguousarray(output.array).astype(output.array.dtype.newbyteorder("<"), copy=False).tobytes()


def timeout_us(parameters: object) -> float | None:
    """The request's `timeout` parameter (µs), validated."""
    if not isinstance(parameters, dict) or "timeout" not in parameters:
        return None
    value = parameters["timeout"]
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise BadRequest("parameter 'timeout' must be a positive number of microseconds")
    return float(value)


# ------------------------------------------------------------------------------------------------ HTTP
def decode_http(body: bytes, header_length: str | None) -> InferRequest:
    """An HTTP infer body: a JSON header, optionally followed by binary tensor data."""
    header, binary = _split_body(body, header_length)
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
            elements = (split_bytes_elements(name, raw, shape) if raw is not None
                        else json_bytes_elements(name, item.get("data"), shape))
            inputs.append(InferInput(name, datatype, shape, elements=elements))
        else:
            array = numeric_array(name, datatype, shape, data=item.get("data"), raw=raw)
            inputs.append(InferInput(name, datatype, shape, array=array))
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    parameters = header.get("parameters") or {}
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
    return InferRequest(inputs, requested, id=header.get("id"), timeout_us=timeout_us(parameters),
                        binary_default=bool(parameters.get("binary_data_output", False)), parameters=parameters)


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


def encode_http(model: str, version: str | None, request: InferRequest,
                outputs: list[InferOutput]) -> tuple[bytes, dict[str, str]]:
    """The HTTP response body and headers: JSON, or a JSON header + binary tensors when any output is binary."""
    header: dict[str, Any] = {"model_name": model, "model_version": version or "1"}
    if request.id is not None:
        header["id"] = request.id
    binary_by_name = {o.name: o.binary for o in request.outputs or []}
    entries, chunks = [], []
    for output in outputs:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": output.shape}
        as_binary = binary_by_name.get(output.name)
        if as_binary is None:
            as_binary = request.binary_default
        if as_binary:
            data = tensor_bytes(output)
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
        return json_part, {"content-type": "application/json"}
    return json_part + b"".join(chunks), {"content-type": "application/octet-stream",
                                          "Inference-Header-Content-Length": str(len(json_part))}


# ------------------------------------------------------------------------------------------------ gRPC
def grpc_parameter(value: Any) -> object:
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind else None


def decode_grpc(message: Any) -> InferRequest:
    """A gRPC ModelInferRequest: raw_input_contents (binary, like HTTP's extension) or typed contents."""
    raw_contents = list(message.raw_input_contents)
    if raw_contents and len(raw_contents) != len(message.inputs):
        raise BadRequest(f"{len(raw_contents)} raw_input_contents for {len(message.inputs)} inputs")
    inputs = []
    for index, tensor in enumerate(message.inputs):
        shape = [int(d) for d in tensor.shape]
        if any(d < 0 for d in shape):
            raise BadRequest(f"input {tensor.name!r}: shape {shape} must be non-negative")
        raw = raw_contents[index] if raw_contents else None
        if tensor.datatype == "BYTES":
            if raw is not None:
                elements = split_bytes_elements(tensor.name, raw, shape)
            else:
                elements = list(tensor.contents.bytes_contents)
                if len(elements) != element_count(shape):
                    raise BadRequest(f"input {tensor.name!r}: {len(elements)} BYTES elements for shape {shape}")
            inputs.append(InferInput(tensor.name, "BYTES", shape, elements=elements))
            continue
        if raw is not None:
            array = numeric_array(tensor.name, tensor.datatype, shape, raw=raw)
        else:
            content_field = GRPC_CONTENT_FIELDS.get(tensor.datatype)
            if content_field is None:
                raise BadRequest(f"input {tensor.name!r}: datatype {tensor.datatype!r} has no typed contents")
            array = numeric_array(tensor.name, tensor.datatype, shape,
                                  data=list(getattr(tensor.contents, content_field)))
        inputs.append(InferInput(tensor.name, tensor.datatype, shape, array=array))
    requested = [RequestedOutput(o.name, classification=_classification(o)) for o in message.outputs] or None
    parameters = {key: grpc_parameter(value) for key, value in message.parameters.items()}
    return InferRequest(inputs, requested, id=message.id or None, timeout_us=timeout_us(parameters),
                        parameters=parameters)


def _classification(output: Any) -> int | None:
    value = output.parameters.get("classification")
    if value is None:
        return None
    count = grpc_parameter(value)
    if not isinstance(count, int) or isinstance(count, bool):
        raise BadRequest(f"output {output.name!r}: 'classification' must be an integer")
    return count


def encode_grpc(response: Any, outputs: list[InferOutput]) -> Any:
    """Fill a ModelInferResponse with the outputs as raw_output_contents."""
    for output in outputs:
        tensor = response.outputs.add()
        tensor.name, tensor.datatype = output.name, output.datatype
        tensor.shape.extend(output.shape)
        response.raw_output_contents.append(tensor_bytes(output))
    return response
