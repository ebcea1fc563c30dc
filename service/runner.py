"""The request line every image request travels, whatever the protocol:

    receive → admit → decode + preprocess → batcher → backend → postprocess → encode

`/v1` task endpoints run all of it (`run_task`); KServe v2 requests with encoded images (BYTES tensors)
share the admit, decode + preprocess and batcher steps (`admit`, `prepare_images`, `infer_images`).
Admission (service.admission) refuses what the limits do not allow from the image headers alone and
holds the request's places in the model's queue and its share of the server's memory budget while it
is decoded, so refusals take milliseconds and an admitted request is not refused later. Decoding,
preprocessing, postprocessing and encoding are CPU work and run in the worker pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

import numpy as np
from fastapi import Request
from fastapi.responses import Response

from service.admission import MemoryBudget, admit_images
from service.api.images import read_images
from service.batcher import Reservation
from service.model_runtime import ModelManager, ServedModel
from service.prepare import PreparedImage, prepare_image
from service.settings import ServerSettings
from service.tasks import Encoded, TaskHandler, TaskParams, TaskRequest
from service.timing import Interval, current, record_all

T = TypeVar("T")


async def in_pool(pool: Executor, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args, **kwargs))


def image_names(count: int) -> list[str]:
    """How errors name a request's images: "image", or "image 1", "image 2", ..."""
    return [f"image {i + 1}" for i in range(count)] if count > 1 else ["image"]


@contextlib.contextmanager
def admit(model: ServedModel, images: Sequence[bytes], names: Sequence[str], settings: ServerSettings,
          budget: MemoryBudget, *, places: int) -> Iterator[Reservation]:
    """Check the images against the limits (headers only), then hold `places` in the model's queue and the
    request's memory until the block ends."""
    cost = admit_images(images, model.info.preprocess, settings, names)
    with model.reserve(places) as reservation:
        budget.acquire(cost)
        try:
            yield reservation
        finally:
            budget.release(cost)


async def prepare_images(pool: Executor, model: ServedModel, images: Sequence[bytes], *, max_pixels: int,
                         names: Sequence[str]) -> list[PreparedImage]:
    """Decode and preprocess each image for `model` (in parallel in the pool); 4xx errors name the image."""
    prepared = list(await asyncio.gather(*(
        in_pool(pool, prepare_image, data, model.info, max_pixels=max_pixels, what=name)
        for data, name in zip(images, names, strict=True)
    )))
    timings = current()
    for image in prepared:
        record_all(timings, image.intervals)
    return prepared


async def infer_images(model: ServedModel, prepared: Sequence[PreparedImage], outputs: Sequence[str],
                       timeout_ms: float | None, *, arrived: float,
                       reservation: Reservation) -> list[dict[str, np.ndarray]]:
    """One batcher request per image, so each batches with everyone else's (outputs with batch dim 1)."""
    timeout_s = timeout_ms / 1000.0 if timeout_ms is not None else None
    return list(await asyncio.gather(*(
        model.infer({"pixel_values": image.pixel_values}, outputs, timeout_s=timeout_s, arrived=arrived,
                    reservation=reservation, timings=current())
        for image in prepared
    )))


def finish(handler: TaskHandler, model: ServedModel, outputs: Sequence[dict[str, np.ndarray]],
           prepared: Sequence[PreparedImage], request: TaskRequest) -> tuple[Encoded, list[Interval]]:
    """Postprocess every image and encode the answer (one pool job); also returns when each step ran."""
    started = time.time_ns()
    results = [handler.postprocess(o, p, model.info, request) for o, p in zip(outputs, prepared, strict=True)]
    postprocessed = time.time_ns()
    encoded = handler.respond(model.name, results, request, model.info)
    return encoded, [("postprocess", started, postprocessed), ("encode", postprocessed, time.time_ns())]


async def run_task(request: Request, name: str, handler: TaskHandler, params: TaskParams) -> Response:
    """The whole line for one `/v1/models/{name}/{verb}` request."""
    arrived = time.monotonic()
    state = request.app.state
    manager: ModelManager = state.manager
    settings: ServerSettings = state.settings
    pool: Executor = state.pool
    model = manager.get(name, task=handler.task)
    model.reserve(1).release()  # a full queue refuses before the body is even read
    task_request = TaskRequest(params, accept=request.headers.get("accept", ""))
    images = await read_images(request, settings)
    handler.check(name, model.info, task_request, len(images))
    names = image_names(len(images))
    with admit(model, images, names, settings, state.memory_budget, places=len(images)) as reservation:
        prepared = await prepare_images(pool, model, images, max_pixels=settings.max_image_pixels, names=names)
        outputs = await infer_images(model, prepared, handler.outputs(model.info, task_request), params.timeout_ms,
                                     arrived=arrived, reservation=reservation)
        encoded, intervals = await in_pool(pool, finish, handler, model, outputs, prepared, task_request)
    record_all(current(), intervals)
    return Response(encoded.body, media_type=encoded.media_type)
