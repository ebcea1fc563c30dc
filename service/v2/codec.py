"""KServe v2 wire formats ↔ one transport-free request/response: HTTP JSON (+ Triton's binary tensor
extension) and gRPC `ModelInferRequest`/`ModelInferResponse` both decode to `InferRequest` and encode
from `InferOutput` here, so validation is written once.

A JSON output never carries `parameters` other than `binary_data_size` (perf_analyzer rejects others).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.backends.base import V2_DATATYPES
from service.errors import BadRequest

HEADER_LENGTH = "inference-header-content-length"
MAX_RANK = 8  # no PaCa model has tensors of more dimensions
GRPC_CONTENT_FIELDS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


@dataclass
class InferInput:
    """One input as it arrived: its declared name, datatype and shape, and its data not yet turned into an
    array — that allocates, so it happens only after the shape was checked against the model (`array`)."""

    name: str
    datatype: str
    shape: list[int]
    raw: bytes | None = None  # binary tensor data (HTTP binary extension, gRPC raw contents)
    data: object = None  # JSON `data` or gRPC typed contents
    elements: list[bytes] | None = None  # BYTES tensors

    def array(self) -> np.ndarray:
        return numeric_array(self.name, self.datatype, self.shape, data=self.data, raw=self.raw)


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
        # A read-only view of the body, no copy; the batch buffer is the one copy (a byte swap on big-endian hosts).
        return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)
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
    """An HTTP infer body: a JSON header, optionally followed by binary tensor data. Every field is checked
    for its type before it is used."""
    header, binary = _split_body(body, header_length)
    parameters = _object(header.get("parameters"), "'parameters'")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("'inputs' must be a non-empty list")
    inputs, offset, seen = [], 0, set()
    for position, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise BadRequest(f"inputs[{position}] must be an object")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
            raise BadRequest(f"inputs[{position}] needs 'name' (string), 'datatype' (string) and 'shape' (list)")
        if name in seen:
            raise BadRequest(f"input {name!r} is given twice")
        seen.add(name)
        check_shape(name, shape)
        input_parameters = _object(item.get("parameters"), f"input {name!r}: 'parameters'")
        raw = None
        if "binary_data_size" in input_parameters:
            size = input_parameters["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise BadRequest(f"input {name!r}: binary_data_size {size!r} must be a byte count within the "
                                 f"{len(binary) - offset} binary bytes left in the body")
            raw, offset = binary[offset:offset + size], offset + size
        if datatype == "BYTES":
            elements = (split_bytes_elements(name, raw, shape) if raw is not None
                        else json_bytes_elements(name, item.get("data"), shape))
            inputs.append(InferInput(name, datatype, shape, elements=elements))
        else:
            if datatype not in V2_DATATYPES:
                raise BadRequest(f"input {name!r}: unsupported datatype {datatype!r}")
            if raw is None and "data" not in item:
                raise BadRequest(f"input {name!r} has neither 'data' nor binary data")
            inputs.append(InferInput(name, datatype, shape, raw=raw, data=item.get("data")))
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise BadRequest("parameter 'binary_data_output' must be true or false")
    return InferRequest(inputs, _requested_outputs(header.get("outputs")), id=request_id,
                        timeout_us=timeout_us(parameters), binary_default=binary_output, parameters=parameters)


def _object(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be an object")
    return value


def _requested_outputs(raw: object) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadRequest("'outputs' must be a list of objects")
    if not raw:
        return None
    requested, seen = [], set()
    for position, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"outputs[{position}] must be an object with a 'name' (string)")
        name = item["name"]
        if name in seen:
            raise BadRequest(f"output {name!r} is requested twice")
        seen.add(name)
        params = _object(item.get("parameters"), f"output {name!r}: 'parameters'")
        classification = params.get("classification")
        if classification is not None and (not isinstance(classification, int) or isinstance(classification, bool)):
            raise BadRequest(f"output {name!r}: 'classification' must be an integer")
        binary_flag = params.get("binary_data")
        if binary_flag is not None and not isinstance(binary_flag, bool):
            raise BadRequest(f"output {name!r}: 'binary_data' must be true or false")
        requested.append(RequestedOutput(name, classification, binary_flag))
    return requested


def check_shape(name: str, shape: Sequence[object]) -> None:
    if len(shape) > MAX_RANK or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadRequest(f"input {name!r}: shape {list(shape)[:MAX_RANK + 1]} must be a list of at most {MAX_RANK} "
                         "non-negative integers")


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
        header = orjson.loads(json_part)  # nesting deeper than 1024 levels is refused, not recursed into
    except orjson.JSONDecodeError as exc:
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
    json_part = orjson.dumps(header)
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
    inputs, seen = [], set()
    for index, tensor in enumerate(message.inputs):
        shape = [int(d) for d in tensor.shape]
        check_shape(tensor.name, shape)
        if tensor.name in seen:
            raise BadRequest(f"input {tensor.name!r} is given twice")
        seen.add(tensor.name)
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
        if tensor.datatype not in V2_DATATYPES:
            raise BadRequest(f"input {tensor.name!r}: unsupported datatype {tensor.datatype!r}")
        if raw is not None:
            inputs.append(InferInput(tensor.name, tensor.datatype, shape, raw=raw))
        else:
            content_field = GRPC_CONTENT_FIELDS.get(tensor.datatype)
            if content_field is None:
                raise BadRequest(f"input {tensor.name!r}: datatype {tensor.datatype!r} has no typed contents")
            inputs.append(InferInput(tensor.name, tensor.datatype, shape,
                                     data=getattr(tensor.contents, content_field)))
    names = [o.name for o in message.outputs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise BadRequest(f"outputs {duplicated} are requested twice")
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
