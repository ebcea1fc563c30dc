"""KServe v2 inference, transport-free: inputs → the model's batcher → requested outputs.

An input is either the preprocessed FP32 tensor `pixel_values` (B, 3, H, W), or a BYTES tensor (any name,
shape [B] or [B, 1]) of encoded image files, which go through the same decode + preprocess step as /v1
(`service.runner.prepare_images`). Outputs may ask for Triton's classification extension.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor

import numpy as np

from service.backends.base import v2_datatype
from service.errors import BadRequest, ModelNotFound
from service.model_runtime import ModelManager, ServedModel
from service.runner import prepare_images
from service.v2.codec import InferInput, InferOutput, InferRequest, RequestedOutput


def find_model(manager: ModelManager, name: str, version: str | None, *, ready: bool = True) -> ServedModel:
    model = manager.get(name, ready=ready)
    if version not in (None, "", model.config.version):
        raise ModelNotFound(f"model {name!r} has no version {version!r} (served: {model.config.version})")
    return model


def loaded_model(manager: ModelManager, name: str, version: str | None) -> ServedModel:
    """A model whose artifact is loaded (its description known), ready or still warming up."""
    model = find_model(manager, name, version, ready=False)
    if model.info is None:
        raise ModelNotFound(f"model {name!r} is still loading")
    return model


async def infer(manager: ModelManager, pool: Executor, model_name: str, version: str | None,
                request: InferRequest, *, max_image_pixels: int) -> tuple[ServedModel, list[InferOutput]]:
    model = find_model(manager, model_name, version)
    wanted = request.outputs or [RequestedOutput(name) for name in model.info.outputs]
    known = set(model.info.outputs)
    for output in wanted:
        if output.name not in known:
            raise BadRequest(f"model {model_name!r} has no output {output.name!r}; outputs: {sorted(known)}")
        if output.classification is not None and output.classification < 1:
            raise BadRequest(f"output {output.name!r}: classification count must be ≥ 1")
    pixel_values = await _pixel_values(model, pool, request.inputs, max_image_pixels)
    names = list(dict.fromkeys(output.name for output in wanted))
    timeout_s = request.timeout_us / 1e6 if request.timeout_us else None
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
    names = [f"{given.name}[{i}]" for i in range(len(elements))]
    prepared = await prepare_images(pool, model, elements, max_pixels=max_pixels, names=names)
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
    labels = model.info.label_names if name == model.info.task_spec.label_output else ()
    rows = []
    for row in flat:
        order = np.lexsort((np.arange(row.shape[0]), -row))[:count]
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
