"""KServe v2 inference, independent of the transport: HTTP (api/v2.py) and gRPC (api/grpc_server.py) only parse
and encode; validation, image decoding, batching and the classification extension live here.

An input is either the preprocessed FP32 tensor `pixel_values` (B, 3, H, W), or a BYTES tensor (any name,
shape [B] or [B, 1]) of encoded image files, which the server decodes and preprocesses like /v1 does.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from service.backends.base import V2_DATATYPES, v2_datatype
from service.errors import BadRequest, ModelNotFound
from service.model_runtime import ModelManager, ServedModel
from service.pipeline import prepare_image

SERVER_NAME = "paca-serve"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "statistics", "model_repository"]
TRITON_TYPES = {name: f"TYPE_{name}" for name in V2_DATATYPES} | {"BYTES": "TYPE_STRING"}


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
class InferOutput:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray  # numeric, or dtype=object holding bytes for BYTES


def find_model(manager: ModelManager, name: str, version: str | None, *, ready: bool = True) -> ServedModel:
    model = manager.get(name, ready=ready)
    if version not in (None, "", model.config.version):
        raise ModelNotFound(f"model {name!r} has no version {version!r} (served: {model.config.version})")
    return model


def numeric_array(name: str, datatype: str, shape: Sequence[int], *, data: object = None,
                  raw: bytes | None = None) -> np.ndarray:
    """A v2 tensor from JSON `data` (flat or nested) or raw little-endian bytes, checked against `shape`."""
    if datatype not in V2_DATATYPES:
        raise BadRequest(f"input {name!r}: unsupported datatype {datatype!r}")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise BadRequest(f"input {name!r}: shape {list(shape)} must be non-negative integers")
    dtype = V2_DATATYPES[datatype].newbyteorder("<")
    count = int(np.prod(shape)) if shape else 1
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
    expected = int(np.prod(shape)) if shape else 1
    if len(elements) != expected:
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


async def infer(
    manager: ModelManager,
    pool: Executor,
    model_name: str,
    version: str | None,
    inputs: list[InferInput],
    requested: list[RequestedOutput] | None,
    *,
    timeout_us: float | None = None,
    max_image_pixels: int,
) -> tuple[ServedModel, list[InferOutput]]:
    model = find_model(manager, model_name, version)
    pixel_values = await _pixel_values(model, pool, inputs, max_image_pixels)
    wanted = requested or [RequestedOutput(name) for name in model.info.outputs]
    known = set(model.info.outputs)
    for output in wanted:
        if output.name not in known:
            raise BadRequest(f"model {model_name!r} has no output {output.name!r}; outputs: {sorted(known)}")
        if output.classification is not None and output.classification < 1:
            raise BadRequest(f"output {output.name!r}: classification count must be ≥ 1")
    names = list(dict.fromkeys(output.name for output in wanted))
    timeout_s = timeout_us / 1e6 if timeout_us else None
    results = await model.infer({"pixel_values": pixel_values}, names, timeout_s=timeout_s)
    outputs = []
    for output in wanted:
        array = results[output.name]
        if output.classification is not None:
            outputs.append(classification_output(output.name, array, output.classification, model))
        else:
            outputs.append(InferOutput(output.name, v2_datatype(array.dtype), list(array.shape), array))
    return model, outputs


async def _pixel_values(model: ServedModel, pool: Executor, inputs: list[InferInput], max_pixels: int) -> np.ndarray:
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise BadRequest(f"expected exactly one input ('pixel_values' FP32, or BYTES of encoded images), got {names}")
    (given,) = inputs
    if given.datatype == "BYTES":
        return await _images_to_pixels(model, pool, given, max_pixels)
    if given.name != "pixel_values":
        raise BadRequest(f"unknown input {given.name!r}: send 'pixel_values' (FP32) or a BYTES tensor of images")
    spec = next(i for i in model.inputs() if i.name == "pixel_values")
    if given.datatype != spec.datatype:
        raise BadRequest(f"input 'pixel_values' must be {spec.datatype}, got {given.datatype}")
    array = given.array
    if array is None or array.ndim != len(spec.shape):
        raise BadRequest(f"input 'pixel_values' must have shape {_shape_text(spec.shape)}, got {given.shape}")
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if axis > 0 and want != -1 and want != got:
            raise BadRequest(f"input 'pixel_values' must have shape {_shape_text(spec.shape)}, got {given.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


async def _images_to_pixels(model: ServedModel, pool: Executor, given: InferInput, max_pixels: int) -> np.ndarray:
    if len(given.shape) not in (1, 2) or (len(given.shape) == 2 and given.shape[1] != 1):
        raise BadRequest(f"BYTES input {given.name!r} must have shape [B] or [B, 1], got {given.shape}")
    elements = given.elements or []
    loop = asyncio.get_running_loop()
    prepared = await asyncio.gather(*(
        loop.run_in_executor(pool, functools.partial(prepare_image, data, model.info, max_pixels=max_pixels,
                                                     what=f"{given.name}[{i}]"))
        for i, data in enumerate(elements)
    ))
    shapes = {p.pixel_values.shape for p in prepared}
    if len(shapes) != 1:
        raise BadRequest(f"the images preprocess to different sizes {sorted(s[2:] for s in shapes)} and cannot form "
                         "one tensor; send them in separate requests")
    return np.concatenate([p.pixel_values for p in prepared])


def classification_output(name: str, array: np.ndarray, count: int, model: ServedModel) -> InferOutput:
    """Triton's classification extension: top `count` of the last axis as "value:index:label" strings."""
    if array.ndim < 1:
        raise BadRequest(f"output {name!r} is a scalar; it cannot be classified")
    flat = array.reshape(-1, array.shape[-1]) if array.ndim > 1 else array.reshape(1, -1)
    count = min(count, flat.shape[1])
    rows = []
    for row in flat:
        order = np.lexsort((np.arange(row.shape[0]), -row))[:count]
        labels = model.info.label_names if name == "logits" else ()
        rows.append([
            (f"{float(row[i]):f}:{int(i)}:{labels[i]}" if i < len(labels) else f"{float(row[i]):f}:{int(i)}").encode()
            for i in order
        ])
    values = np.empty((len(rows), count), dtype=object)
    for r, row in enumerate(rows):
        values[r, :] = row
    shape = [*array.shape[:-1], count] if array.ndim > 1 else [count]
    return InferOutput(name, "BYTES", shape, values.reshape(shape))


def _shape_text(shape: Sequence[int]) -> str:
    parts = ["B" if i == 0 and d == -1 else ("*" if d == -1 else str(d)) for i, d in enumerate(shape)]
    return "[" + ", ".join(parts) + "]"


# ----------------------------------------------------------------------------------- metadata and config
def model_metadata(model: ServedModel) -> dict[str, object]:
    batch_dim = -1 if model.batchable else 1
    inputs = [{"name": i.name, "datatype": i.datatype, "shape": [batch_dim, *i.shape[1:]]} for i in model.inputs()]
    outputs = [{"name": o.name, "datatype": o.datatype,
                "shape": [-1, *o.shape[1:]] if model.batchable else list(o.shape)} for o in model.outputs()]
    return {"name": model.name, "versions": [model.config.version], "platform": model.platform,
            "inputs": inputs, "outputs": outputs}


def model_config(model: ServedModel) -> dict[str, object]:
    """Triton ModelConfig JSON: dims exclude the batch dim when max_batch_size > 0 (0 = detection, unbatched)."""
    batching = model.config.batching
    max_batch = model.max_batch_size if model.batchable else 0
    def dims(shape: Sequence[int]) -> list[int]:
        return list(shape[1:]) if max_batch > 0 else list(shape)
    outputs = []
    for o in model.outputs():
        entry: dict[str, object] = {"name": o.name, "data_type": TRITON_TYPES[o.datatype], "dims": dims(o.shape)}
        if o.name == "logits" and model.info.label_names:
            entry["label_filename"] = f"{model.info.label_set or 'labels'}.txt"
        outputs.append(entry)
    config: dict[str, object] = {
        "name": model.name,
        "platform": model.platform,
        "backend": model.backend_name,
        "max_batch_size": max_batch,
        "input": [{"name": i.name, "data_type": TRITON_TYPES[i.datatype], "format": "FORMAT_NCHW",
                   "dims": dims(i.shape), "optional": False, "is_shape_tensor": False} for i in model.inputs()],
        "output": outputs,
        "instance_group": [{"name": f"{model.name}_0", "kind": "KIND_CPU", "count": model.config.instances}],
        # The artifact's self-description travels with the config, so a remote PaCa backend can read it.
        "parameters": {key: {"string_value": value} for key, value in model.backends[0].metadata().items()
                       if key.startswith("paca.")},
    }
    if max_batch > 0:
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": int(batching.max_queue_delay_ms * 1000),
            "preserve_ordering": False,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": int(batching.queue_timeout_ms * 1000),
                "allow_timeout_override": batching.allow_timeout_override,
                "max_queue_size": batching.max_queue_size,
            },
        }
    return config


def repository_index(manager: ModelManager) -> list[dict[str, str]]:
    return [{"name": m.name, "version": m.config.version, "state": "READY" if m.ready else "UNAVAILABLE",
             "reason": "" if m.ready else "loading"} for m in manager.models.values()]
