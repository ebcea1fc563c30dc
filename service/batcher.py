"""Dynamic batcher: one per model; groups queued requests into backend runs, off the event loop.

Semantics (documented in docs/api.md, after Triton's dynamic batcher and queue policy):
- A batch closes as soon as it holds `max_batch_size` samples, or when its oldest request has waited
  `max_queue_delay_ms` (0 = take what is queued right now, never wait). With the default "adaptive"
  policy it also closes at once when waiting cannot help: an instance is free and no other request is on
  its way to this model (none has reserved a place while its body is read or its images decoded). So a
  lone request never waits for company, and under load batches still fill. `policy: "delay"` keeps
  Triton's behaviour (always wait up to the delay).
- A batch is formed only when an instance is free, so under load batches grow instead of queueing
  small ones; each instance is one worker thread with its own session. When a worker finishes a batch and
  the next one is ready by the rules above, the worker takes it at once, without a round trip through the
  event loop: under overload the loop is busy refusing requests, and inference must not wait for it.
- Only requests whose inputs have identical shapes/dtypes (after the batch dimension) and that ask for
  the same outputs share a batch. Variable-size models (segmentation, detection) therefore batch images
  that preprocess to the same size; the others run in their own batches — never padded, since PaCa's
  features depend on padding. Models whose task does not batch run one request at a time.
- The queue is bounded: at `max_queue_size` waiting (or reserved) requests a new one is rejected at
  once (503 + Retry-After). Callers that must decode images first reserve their places before decoding
  (`reserve`), so a request admitted is never refused afterwards, and one that can never fit (more
  images than the queue holds) is a 400. A request still queued when its deadline passes is answered
  504; once it runs it finishes. The deadline counts from the request's arrival, decoding included.
- Draining (shutdown): new requests get 503, queued and running ones complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service import tracing
from service.backends.base import Backend
from service.errors import BackendFailure, BadRequest, NotReady, QueueFull, QueueTimeout, ServiceError
from service.repository import BatchingConfig
from service.stats import ModelStats
from service.timing import RequestTimings

log = logging.getLogger("paca.batcher")

GroupKey = tuple[tuple[tuple[str, tuple[int, ...], str], ...], tuple[str, ...]]


@dataclass(eq=False)  # identity semantics: the queue removes *this* request, never compares arrays
class QueuedRequest:
    inputs: Mapping[str, np.ndarray]
    output_names: tuple[str, ...]
    batch_size: int
    key: GroupKey
    future: asyncio.Future
    enqueued_ns: int = field(default_factory=time.monotonic_ns)
    enqueued_wall_ns: int = field(default_factory=time.time_ns)
    state: str = "queued"  # queued → running | expired | cancelled
    timings: RequestTimings | None = None
    expiry: asyncio.TimerHandle | None = None


class Reservation:
    """Places in a batcher's queue held for one request's images while they are decoded."""

    def __init__(self, batcher: DynamicBatcher, count: int) -> None:
        self._batcher = batcher
        self.remaining = count

    def take(self) -> None:
        if self.remaining <= 0:
            raise RuntimeError("no reserved place left")
        self.remaining -= 1
        self._batcher._reserved -= 1

    def release(self) -> None:
        self._batcher._reserved -= self.remaining
        self.remaining = 0

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class _Instance:
    index: int
    backend: Backend
    executor: ThreadPoolExecutor


def group_key(inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> GroupKey:
    signature = tuple(sorted((name, tuple(array.shape[1:]), array.dtype.str) for name, array in inputs.items()))
    return signature, tuple(output_names)


class DynamicBatcher:
    """Queue + scheduler + instance workers of one model."""

    def __init__(
        self,
        model_name: str,
        backends: Sequence[Backend],
        *,
        max_batch_size: int,
        batching: BatchingConfig,
        stats: ModelStats,
        batchable: bool = True,
        on_batch: Callable[[int], None] | None = None,
        on_queued: Callable[[float], None] | None = None,
    ) -> None:
        if not backends:
            raise ValueError("a batcher needs at least one backend instance")
        self.model_name = model_name
        self.max_batch_size = max_batch_size if batchable else 1
        self.batchable = batchable
        self.config = batching
        self.stats = stats
        self._on_batch = on_batch  # batch size → histogram
        self._on_queued = on_queued  # seconds a request waited → histogram
        self._instances = [
            _Instance(i, backend, ThreadPoolExecutor(1, thread_name_prefix=f"{model_name}-{i}"))
            for i, backend in enumerate(backends)
        ]
        self._queue: deque[QueuedRequest] = deque()
        self._lock = threading.Lock()  # the queue and request states: the loop and the workers both take batches
        self._arrival: asyncio.Event | None = None
        self._free: asyncio.Queue[_Instance] | None = None
        self._scheduler: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._reserved = 0
        self._draining = False

    # ----------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._arrival = asyncio.Event()
        self._free = asyncio.Queue()
        for instance in self._instances:
            self._free.put_nowait(instance)
        self._scheduler = asyncio.create_task(self._schedule(), name=f"batcher-{self.model_name}")

    async def drain(self, timeout_s: float) -> None:
        """Refuse new requests; wait (up to timeout_s) until queued and running ones are answered."""
        self._draining = True
        if self._arrival is not None:
            self._arrival.set()
        deadline = time.monotonic() + timeout_s
        while (self._queue or self._running) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._draining = True
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        with self._lock:
            left = list(self._queue)
            self._queue.clear()
        for request in left:
            if not request.future.done():
                request.future.set_exception(NotReady("server is shutting down"))
        for instance in self._instances:
            instance.executor.shutdown(wait=True)
            instance.backend.close()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def reserve(self, count: int) -> Reservation:
        """Hold `count` places in the queue (one per image) before the images are decoded.

        More than the queue can ever hold is the client's problem (400); a queue without room now is the
        server's (503 + Retry-After).
        """
        self._check_accepting()
        limit = self.config.max_queue_size
        if count > limit:
            raise BadRequest(f"{count} images in one request exceed model {self.model_name!r}'s queue of {limit}; "
                             f"send at most {limit} per request")
        if len(self._queue) + self._reserved + count > limit:
            self.stats.record_failure(0, "REJECTED")
            raise QueueFull(f"model {self.model_name!r}: queue is full ({limit} waiting requests)",
                            retry_after_s=self._drain_estimate_s())
        self._reserved += count
        return Reservation(self, count)

    def _check_accepting(self) -> None:
        if self._draining or self._scheduler is None:
            raise NotReady(f"model {self.model_name!r} is not accepting requests (shutting down or not started)")

    # ------------------------------------------------------------------------------------------- submit
    async def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str],
        *,
        timeout_s: float | None = None,
        arrived: float | None = None,
        reservation: Reservation | None = None,
        timings: RequestTimings | None = None,
    ) -> dict[str, np.ndarray]:
        """Queue one request (leading dim = its samples) and wait for its outputs.

        `timeout_s` may lower the model's queue timeout when the repository allows overrides; the deadline
        counts from `arrived` (time.monotonic() when the request came in; default now). With a
        `reservation` the request takes one of its places instead of needing a free one.
        """
        started = time.monotonic_ns()
        batch_size = self._validate(inputs)
        if reservation is not None:
            reservation.take()
        else:
            self._check_accepting()
            if len(self._queue) + self._reserved >= self.config.max_queue_size:
                self.stats.record_failure(0, "REJECTED")
                raise QueueFull(
                    f"model {self.model_name!r}: queue is full ({self.config.max_queue_size} waiting requests)",
                    retry_after_s=self._drain_estimate_s(),
                )
        deadline = self._deadline(timeout_s, time.monotonic() if arrived is None else arrived)
        loop = asyncio.get_running_loop()
        request = QueuedRequest(
            inputs=inputs,
            output_names=tuple(output_names),
            batch_size=batch_size,
            key=group_key(inputs, output_names),
            future=loop.create_future(),
            timings=timings,
        )
        if deadline is not None:  # a timer, not a task per request: expires the request if still queued then
            request.expiry = loop.call_later(max(deadline - time.monotonic(), 0.0), self._expire, request)
        with self._lock:
            self._queue.append(request)
        self.stats.pending = len(self._queue)
        assert self._arrival is not None
        self._arrival.set()
        try:
            outputs = await request.future
        except ServiceError as exc:
            reason = "REJECTED" if isinstance(exc, QueueTimeout | NotReady) else "BACKEND"
            self.stats.record_failure(time.monotonic_ns() - started, reason)
            raise
        except asyncio.CancelledError:
            self._forget(request, "cancelled")
            self.stats.record_failure(time.monotonic_ns() - started, "CANCELED")
            raise
        finally:
            if request.expiry is not None:
                request.expiry.cancel()
        self.stats.record_success(time.monotonic_ns() - started)
        return outputs

    def _validate(self, inputs: Mapping[str, np.ndarray]) -> int:
        sizes = {array.shape[0] if array.ndim else 0 for array in inputs.values()}
        if len(sizes) != 1:
            raise BadRequest("all inputs of one request must have the same batch size")
        (batch_size,) = sizes
        if batch_size < 1:
            raise BadRequest("the batch dimension must be at least 1")
        if batch_size > self.max_batch_size:
            raise BadRequest(
                f"batch of {batch_size} exceeds model {self.model_name!r} max_batch_size {self.max_batch_size}; "
                "split the request"
            )
        return batch_size

    def _drain_estimate_s(self) -> int:
        """Whole seconds until the current queue is likely worked off (Retry-After), at least 1."""
        # compute_infer is recorded per request, so its mean is the duration of the batch a request ran in.
        per_batch_s = self.stats.compute_infer.ns / max(self.stats.compute_infer.count, 1) / 1e9
        batches = (len(self._queue) + self._reserved) / max(self.max_batch_size, 1) / len(self._instances)
        return max(1, math.ceil(batches * per_batch_s))

    def _deadline(self, timeout_s: float | None, arrived: float) -> float | None:
        configured = self.config.queue_timeout_ms / 1000.0 if self.config.queue_timeout_ms > 0 else None
        if timeout_s is not None and self.config.allow_timeout_override:
            configured = timeout_s if configured is None else min(configured, timeout_s)
        return None if configured is None else arrived + configured

    def _expire(self, request: QueuedRequest) -> None:
        """The request's deadline passed: answer 504 if it is still waiting (once running, it finishes)."""
        if self._forget(request, "expired") and not request.future.done():
            request.future.set_exception(QueueTimeout(
                f"model {self.model_name!r}: request waited longer than its queue deadline "
                f"({self.config.queue_timeout_ms:g} ms or the request's timeout)"))

    def _forget(self, request: QueuedRequest, state: str) -> bool:
        """Take a still-queued request out of the queue; False if a batch already took it."""
        with self._lock:
            if request.state != "queued":
                return False
            request.state = state
            with contextlib.suppress(ValueError):
                self._queue.remove(request)
        self.stats.pending = len(self._queue)
        return True

    # ---------------------------------------------------------------------------------------- schedule
    async def _schedule(self) -> None:
        assert self._free is not None
        while True:
            instance = await self._free.get()
            try:
                batch = await self._next_batch()
            except asyncio.CancelledError:
                raise
            except Exception:  # a scheduler that dies silently would hang every request: log and go on
                log.exception("model %s: batch formation failed", self.model_name)
                self._free.put_nowait(instance)
                await asyncio.sleep(0.01)
                continue
            task = asyncio.create_task(self._execute(instance, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[QueuedRequest]:
        assert self._arrival is not None
        delay_ns = int(self.config.max_queue_delay_ms * 1e6)
        while True:
            if not self._queue:
                self._arrival.clear()
                await self._arrival.wait()
                continue
            batch = self._take_ready_batch()
            if batch:
                return batch
            if not self._queue:  # (a worker took what there was)
                continue
            close_at = self._queue[0].enqueued_ns + delay_ns
            self._arrival.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrival.wait(), max(close_at - time.monotonic_ns(), 0) / 1e9)

    def _take_ready_batch(self) -> list[QueuedRequest]:
        """The next batch if the rules say it closes now (full, waited long enough, draining, or nothing else
        on its way); taken out of the queue. Empty when it should wait. Any thread."""
        with self._lock:
            if not self._queue:
                return []
            batch, samples = self._collect()
            ready = (samples >= self.max_batch_size or self._draining
                     or time.monotonic_ns() >= self._queue[0].enqueued_ns + int(self.config.max_queue_delay_ms * 1e6)
                     or (self.config.policy == "adaptive" and self._reserved == 0))
            if not ready:
                return []
            for request in batch:
                self._queue.remove(request)
                request.state = "running"
        return batch

    def _collect(self) -> tuple[list[QueuedRequest], int]:
        """The oldest request plus later compatible ones, in arrival order, up to max_batch_size samples."""
        oldest = self._queue[0]
        batch, samples = [oldest], oldest.batch_size
        if not self.batchable:
            return batch, samples
        for request in list(self._queue)[1:]:
            if samples >= self.max_batch_size:
                break
            if request.key == oldest.key and samples + request.batch_size <= self.max_batch_size:
                batch.append(request)
                samples += request.batch_size
        return batch, samples

    async def _execute(self, instance: _Instance, batch: list[QueuedRequest]) -> None:
        """Run `batch` and whatever batches become ready while it runs on the instance's worker thread; the
        answers come back to the loop batch by batch (`_deliver`)."""
        assert self._free is not None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(instance.executor, self._work, loop, instance, batch)
        finally:
            self.stats.pending = len(self._queue)
            self._free.put_nowait(instance)

    def _work(self, loop: asyncio.AbstractEventLoop, instance: _Instance, batch: list[QueuedRequest]) -> None:
        """Worker thread: run batches back to back while the queue has a ready one."""
        while batch:
            started, started_wall = time.monotonic_ns(), time.time_ns()
            try:
                outcome: object = self._run(instance, batch)
            except Exception as exc:  # delivered as the batch's failure; the next batch still runs
                outcome = exc
            loop.call_soon_threadsafe(self._deliver, batch, outcome, started, started_wall)
            try:
                batch = self._take_ready_batch()
            except Exception:
                log.exception("model %s: batch formation failed", self.model_name)
                return

    def _run(self, instance: _Instance, batch: list[QueuedRequest]
             ) -> tuple[list[dict[str, np.ndarray]], tuple[int, int, int]]:
        traced = [request.timings.trace for request in batch if request.timings and request.timings.trace]
        if traced:
            attributes = {"paca.model": self.model_name, "paca.batch.requests": len(batch),
                          "paca.batch.samples": sum(request.batch_size for request in batch)}
            return tracing.run_in_batch_span(traced, attributes, _run_batch, instance.backend, batch)
        return _run_batch(instance.backend, batch)

    def _deliver(self, batch: list[QueuedRequest], outcome: object, started: int, started_wall: int) -> None:
        """On the loop: statistics, timings and the answers (or the failure) of one finished batch."""
        self.stats.pending = len(self._queue)
        for request in batch:
            self.stats.record_queue(started - request.enqueued_ns)
            if self._on_queued is not None:
                self._on_queued((started - request.enqueued_ns) / 1e9)
        if isinstance(outcome, ServiceError):
            self._fail(batch, outcome)
            return
        if isinstance(outcome, Exception):
            log.error("model %s: backend failed on a batch of %d", self.model_name, len(batch), exc_info=outcome)
            self._fail(batch, BackendFailure(f"model {self.model_name!r}: inference failed: {outcome}"))
            return
        outputs, timings = outcome  # type: ignore[misc]
        samples = sum(request.batch_size for request in batch)
        self.stats.record_execution(samples, len(batch), *timings)
        if self._on_batch is not None:
            self._on_batch(samples)
        for request, result in zip(batch, outputs, strict=True):
            if request.timings is not None:
                request.timings.record("queue", request.enqueued_wall_ns, started_wall)
                request.timings.record("inference", started_wall, started_wall + sum(timings))
            if not request.future.done():
                request.future.set_result(result)

    @staticmethod
    def _fail(batch: list[QueuedRequest], error: Exception) -> None:
        for request in batch:
            if not request.future.done():
                request.future.set_exception(error)


def _run_batch(
    backend: Backend, batch: list[QueuedRequest]
) -> tuple[list[dict[str, np.ndarray]], tuple[int, int, int]]:
    """Worker thread: concatenate → infer → split back per request. Returns outputs and phase timings (ns)."""
    t0 = time.monotonic_ns()
    names = batch[0].inputs.keys()
    if len(batch) == 1:
        inputs = {name: np.ascontiguousarray(batch[0].inputs[name]) for name in names}
    else:
        inputs = {name: np.concatenate([request.inputs[name] for request in batch]) for name in names}
    t1 = time.monotonic_ns()
    outputs = backend.infer(inputs, batch[0].output_names)
    t2 = time.monotonic_ns()
    if len(batch) == 1:
        split = [outputs]
    else:
        total = sum(request.batch_size for request in batch)
        for name, array in outputs.items():
            if array.shape[:1] != (total,):
                raise BackendFailure(f"output {name!r} has shape {array.shape}; expected a leading batch of {total}")
        split, offset = [], 0
        for request in batch:
            end = offset + request.batch_size
            split.append({name: array[offset:end] for name, array in outputs.items()})
            offset = end
    t3 = time.monotonic_ns()
    return split, (t1 - t0, t2 - t1, t3 - t2)
