"""KServe v2 inference, transport-free: inputs → the model's batcher → requested outputs.

An input is either the preprocessed FP32 tensor `pixel_values` (B, 3, H, W), or a BYTES tensor (any name,
shape [B] or [B, 1]) of encoded image files, which go through the same decode + preprocess step as /v1
(`service.runner.prepare_images`). Outputs may ask for Triton's classification extension.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Executor

import numpy as np

from service.admission import MemoryBudget
from service.backends.base import v2_datatype
from service.batcher import Reservation
from service.errors import BadRequest, ModelNotFound
from service.model_runtime import ModelManager, ServedModel
from service.runner import admit, prepare_images
from service.settings import ServerSettings
from service.timing import current
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
                request: InferRequest, *, settings: ServerSettings, budget: MemoryBudget,
                arrived: float | None = None, reservation: Reservation | None = None,
                ) -> tuple[ServedModel, list[InferOutput]]:
    """Run one v2 request. A `reservation` (a place held in the model's queue while the request's body was
    read) is used for a tensor input; encoded images reserve their own place while they are decoded."""
    arrived = time.monotonic() if arrived is None else arrived
    model = find_model(manager, model_name, version)
    wanted = request.outputs or [RequestedOutput(name) for name in model.info.outputs]
    known = set(model.info.outputs)
    for output in wanted:
        if output.name not in known:
            raise BadRequest(f"model {model_name!r} has no output {output.name!r}; outputs: {sorted(known)}")
        if output.classification is not None and output.classification < 1:
            raise BadRequest(f"output {output.name!r}: classification count must be ≥ 1")
    names = list(dict.fromkeys(output.name for output in wanted))
    timeout_s = request.timeout_us / 1e6 if request.timeout_us else None
    given = _single_input(request.inputs)
    if given.datatype == "BYTES":
        if reservation is not None:  # the images reserve their own place below
            reservation.release()
            reservation = None
        elements = _image_elements(model, given, settings)
        element_names = [f"{given.name}[{i}]" for i in range(len(elements))]
        with admit(model, elements, element_names, settings, budget, places=1) as reservation:
            prepared = await prepare_images(pool, model, elements, max_pixels=settings.max_image_pixels,
                                            names=element_names)
            shapes = {p.pixel_values.shape for p in prepared}
            if len(shapes) != 1:
                raise BadRequest(f"the images preprocess to different sizes {sorted(s[2:] for s in shapes)} and "
                                 "cannot form one tensor; send them in separate requests")
            pixel_values = np.concatenate([p.pixel_values for p in prepared])
            results = await model.infer({"pixel_values": pixel_values}, names, timeout_s=timeout_s,
                                        arrived=arrived, reservation=reservation, timings=current())
    else:
        pixel_values = _pixel_tensor(model, given)
        results = await model.infer({"pixel_values": pixel_values}, names, timeout_s=timeout_s, arrived=arrived,
                                    reservation=reservation, timings=current())
    outputs = []
    for output in wanted:
        array = results[output.name]
        if output.classification is not None:
            outputs.append(classification_output(output.name, array, output.classification, model))
        else:
            outputs.append(InferOutput(output.name, v2_datatype(array.dtype), list(array.shape), array))
    return model, outputs


def _single_input(inputs: list[InferInput]) -> InferInput:
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise BadRequest(f"expected exactly one input ('pixel_values' FP32, or BYTES of encoded images), got {names}")
    return inputs[0]


def _image_elements(model: ServedModel, given: InferInput, settings: ServerSettings) -> list[bytes]:
    if len(given.shape) not in (1, 2) or (len(given.shape) == 2 and given.shape[1] != 1):
        raise BadRequest(f"BYTES input {given.name!r} must have shape [B] or [B, 1], got {given.shape}")
    elements = given.elements or []
    if not elements:
        raise BadRequest(f"BYTES input {given.name!r} holds no image")
    if len(elements) > model.max_batch_size:
        raise BadRequest(f"{len(elements)} images exceed model {model.name!r} max_batch_size {model.max_batch_size}; "
                         "split the request")
    return elements


def _pixel_tensor(model: ServedModel, given: InferInput) -> np.ndarray:
    """The `pixel_values` tensor, its shape checked against the model's before any allocation."""
    if given.name != "pixel_values":
        raise BadRequest(f"unknown input {given.name!r}: send 'pixel_values' (FP32) or a BYTES tensor of images")
    spec = next(i for i in model.inputs() if i.name == "pixel_values")
    if given.datatype != spec.datatype:
        raise BadRequest(f"input 'pixel_values' must be {spec.datatype}, got {given.datatype}")
    expected = _shape_text(spec.shape)
    if len(given.shape) != len(spec.shape):
        raise BadRequest(f"input 'pixel_values' must have shape {expected}, got {given.shape}")
    batch = given.shape[0]
    if batch < 1:
        raise BadRequest(f"input 'pixel_values' has batch {batch}; it must be at least 1")
    if batch > model.max_batch_size:
        raise BadRequest(f"batch of {batch} exceeds model {model.name!r} max_batch_size {model.max_batch_size}; "
                         "split the request")
    largest = model.info.preprocess.max_input_hw
    for axis, (want, got) in enumerate(zip(spec.shape, given.shape, strict=True)):
        if axis == 0:
            continue
        if want != -1 and want != got:
            raise BadRequest(f"input 'pixel_values' must have shape {expected}, got {given.shape}")
        if want == -1 and not 1 <= got <= max(largest):
            raise BadRequest(f"input 'pixel_values' axis {axis} is {got}; this model takes 1 to {max(largest)} "
                             f"(its preprocessing never produces more)")
    return np.ascontiguousarray(given.array(), dtype=np.float32)


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
