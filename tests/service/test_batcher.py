"""DynamicBatcher in-process, with a fake backend: batch formation, grouping, deadlines, queue limits, drain.

The fake backend computes a per-sample function of its input (sum over the non-batch axes, times the
output index), so every split-back result can be compared with the unbatched answer; it records each
batch it ran and can be held (a threading.Event) so requests provably queue behind it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from service.backends.base import Backend, TensorSpec
from service.batcher import DynamicBatcher
from service.errors import BackendFailure, BadRequest, NotReady, QueueFull, QueueTimeout
from service.repository import BatchingConfig
from service.stats import ModelStats


class FakeBackend(Backend):
    """Stands in for an inference session: deterministic per-sample outputs, recorded batches, a hold switch."""

    name = "fake"
    platform = "fake"

    def __init__(self, *, fail_on: float | None = None) -> None:
        self._inputs = [TensorSpec("pixel_values", "FP32", (-1, 2))]
        self._outputs = [TensorSpec("double", "FP32", (-1,)), TensorSpec("triple", "FP32", (-1,))]
        self._metadata = {}
        self.batches: list[int] = []
        self.released = threading.Event()
        self.released.set()
        self.fail_on = fail_on

    def infer(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        self.released.wait(10)
        pixels = inputs["pixel_values"]
        self.batches.append(pixels.shape[0])
        if self.fail_on is not None and np.any(pixels == self.fail_on):
            raise RuntimeError("poisoned sample")
        per_sample = pixels.reshape(pixels.shape[0], -1).sum(axis=1)
        factors = {"double": 2.0, "triple": 3.0}
        return {name: (per_sample * factors[name]).astype(np.float32) for name in output_names}


def sample(value: float, batch: int = 1, width: int = 2) -> dict[str, np.ndarray]:
    return {"pixel_values": np.full((batch, width), value, dtype=np.float32)}


def make_batcher(backend: FakeBackend, *, max_batch_size: int = 4, delay_ms: float = 50, queue: int = 16,
                 timeout_ms: float = 0, batchable: bool = True, instances: int = 1) -> DynamicBatcher:
    backends = [backend] + [FakeBackend() for _ in range(instances - 1)]
    batching = BatchingConfig(max_queue_delay_ms=delay_ms, max_queue_size=queue, queue_timeout_ms=timeout_ms)
    return DynamicBatcher("m", backends, max_batch_size=max_batch_size, batching=batching,
                          stats=ModelStats("m"), batchable=batchable)


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_share_a_batch_and_get_their_own_results_back() -> None:
    backend = FakeBackend()

    async def scenario():
        batcher = make_batcher(backend, max_batch_size=8, delay_ms=100)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(sample(v), ["double"]) for v in (1.0, 2.0, 3.0)))
        await batcher.stop()
        return results

    results = run(scenario())
    assert backend.batches == [3]
    assert [r["double"].tolist() for r in results] == [[4.0], [8.0], [12.0]]  # 2 × (v + v)


def test_a_full_batch_closes_at_once_without_waiting_for_the_delay() -> None:
    backend = FakeBackend()

    async def scenario():
        batcher = make_batcher(backend, max_batch_size=2, delay_ms=5_000)
        batcher.start()
        started = time.monotonic()
        await asyncio.gather(*(batcher.submit(sample(v), ["double"]) for v in (1.0, 2.0)))
        elapsed = time.monotonic() - started
        await batcher.stop()
        return elapsed

    assert run(scenario()) < 4.0  # far below the 5 s delay: the batch was full
    assert backend.batches == [2]


def test_requests_of_other_shapes_or_outputs_do_not_share_a_batch() -> None:
    backend = FakeBackend()

    async def scenario():
        batcher = make_batcher(backend, max_batch_size=8, delay_ms=100)
        batcher.start()
        results = await asyncio.gather(
            batcher.submit(sample(1.0), ["double"]),
            batcher.submit(sample(1.0, width=3), ["double"]),
            batcher.submit(sample(2.0), ["triple"]),
            batcher.submit(sample(3.0), ["double"]),
        )
        await batcher.stop()
        return results

    results = run(scenario())
    assert sorted(backend.batches) == [1, 1, 2]
    assert [r[name].item() for r, name in zip(results, ["double", "double", "triple", "double"], strict=True)] == [
        4.0, 6.0, 12.0, 12.0]


def test_multi_sample_requests_split_back_exactly_and_never_exceed_max_batch() -> None:
    backend = FakeBackend()

    async def scenario():
        batcher = make_batcher(backend, max_batch_size=4, delay_ms=100)
        batcher.start()
        results = await asyncio.gather(batcher.submit(sample(1.0, batch=3), ["double"]),
                                       batcher.submit(sample(2.0, batch=2), ["double"]),
                                       batcher.submit(sample(3.0, batch=1), ["double"]))
        await batcher.stop()
        return results

    results = run(scenario())
    assert all(size <= 4 for size in backend.batches) and sum(backend.batches) == 6
    assert results[0]["double"].tolist() == [4.0] * 3 and results[1]["double"].tolist() == [8.0] * 2
    assert results[2]["double"].tolist() == [12.0]


def test_unbatchable_models_run_one_request_per_execution() -> None:
    backend = FakeBackend()

    async def scenario():
        batcher = make_batcher(backend, max_batch_size=8, batchable=False)
        batcher.start()
        await asyncio.gather(*(batcher.submit(sample(v), ["double"]) for v in (1.0, 2.0, 3.0)))
        with pytest.raises(BadRequest, match="max_batch_size 1"):
            await batcher.submit(sample(1.0, batch=2), ["double"])
        await batcher.stop()

    run(scenario())
    assert backend.batches == [1, 1, 1]


def test_a_full_queue_rejects_at_once_with_retry_after() -> None:
    backend = FakeBackend()
    backend.released.clear()

    async def scenario():
        batcher = make_batcher(backend, max_batch_size=1, delay_ms=0, queue=2)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(sample(1.0), ["double"]))
        await asyncio.sleep(0.1)  # the first request is running (held), the queue is empty again
        queued = [asyncio.ensure_future(batcher.submit(sample(v), ["double"])) for v in (2.0, 3.0)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull, match="queue is full") as refused:
            await batcher.submit(sample(4.0), ["double"])
        backend.released.set()
        done = await asyncio.gather(running, *queued)
        await batcher.stop()
        return refused.value, done, batcher.stats

    refused, done, stats = run(scenario())
    assert int(refused.headers["Retry-After"]) >= 1 and len(done) == 3
    assert stats.failures["REJECTED"] == 1 and stats.success.count == 3


def test_a_request_still_queued_at_its_deadline_gets_a_timeout_and_the_rest_complete() -> None:
    backend = FakeBackend()
    backend.released.clear()

    async def scenario():
        batcher = make_batcher(backend, max_batch_size=1, delay_ms=0, timeout_ms=60_000)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(sample(1.0), ["double"]))
        await asyncio.sleep(0.05)
        hasty = asyncio.ensure_future(batcher.submit(sample(2.0), ["double"], timeout_s=0.1))
        patient = asyncio.ensure_future(batcher.submit(sample(3.0), ["double"]))
        with pytest.raises(QueueTimeout, match="deadline"):
            await hasty
        backend.released.set()
        results = await asyncio.gather(first, patient)
        await batcher.stop()
        return results

    first, patient = run(scenario())
    assert first["double"].item() == 4.0 and patient["double"].item() == 12.0
    assert backend.batches == [1, 1]  # the expired request never ran


def test_a_backend_failure_fails_only_its_batch() -> None:
    backend = FakeBackend(fail_on=9.0)

    async def scenario():
        batcher = make_batcher(backend, max_batch_size=1, delay_ms=0)
        batcher.start()
        outcomes = await asyncio.gather(batcher.submit(sample(9.0), ["double"]),
                                        batcher.submit(sample(1.0), ["double"]), return_exceptions=True)
        await batcher.stop()
        return outcomes

    failed, ok = run(scenario())
    assert isinstance(failed, BackendFailure) and "model 'm'" in failed.message and "poisoned" in failed.message
    assert ok["double"].item() == 4.0


def test_drain_refuses_new_requests_and_completes_queued_ones() -> None:
    backend = FakeBackend()
    backend.released.clear()

    async def scenario():
        batcher = make_batcher(backend, max_batch_size=1, delay_ms=0)
        batcher.start()
        accepted = [asyncio.ensure_future(batcher.submit(sample(v), ["double"])) for v in (1.0, 2.0)]
        await asyncio.sleep(0.05)
        draining = asyncio.ensure_future(batcher.drain(10))
        await asyncio.sleep(0.05)
        with pytest.raises(NotReady, match="not accepting"):
            await batcher.submit(sample(3.0), ["double"])
        backend.released.set()
        await draining
        results = await asyncio.gather(*accepted)
        await batcher.stop()
        return results

    assert [r["double"].item() for r in run(scenario())] == [4.0, 8.0]


def test_a_cancelled_request_leaves_the_queue() -> None:
    backend = FakeBackend()
    backend.released.clear()

    async def scenario():
        batcher = make_batcher(backend, max_batch_size=1, delay_ms=0)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(sample(1.0), ["double"]))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(batcher.submit(sample(2.0), ["double"]))
        await asyncio.sleep(0.05)
        assert batcher.pending == 1
        gone.cancel()
        await asyncio.sleep(0.05)
        pending_after = batcher.pending
        backend.released.set()
        await first
        await batcher.stop()
        return pending_after, batcher.stats

    pending_after, stats = run(scenario())
    assert pending_after == 0 and stats.failures["CANCELED"] == 1
    assert backend.batches == [1]


def test_instances_run_batches_in_parallel() -> None:
    backend = FakeBackend()

    async def scenario():
        batcher = make_batcher(backend, max_batch_size=1, delay_ms=0, instances=2)
        batcher.start()
        backend.released.clear()  # instance 0 blocks; instance 1 must still serve
        blocked = asyncio.ensure_future(batcher.submit(sample(1.0), ["double"]))
        await asyncio.sleep(0.05)
        other = await asyncio.wait_for(batcher.submit(sample(2.0), ["double"]), 5)
        backend.released.set()
        await blocked
        await batcher.stop()
        return other

    assert run(scenario())["double"].item() == 8.0


def test_a_worker_runs_ready_batches_back_to_back_while_the_loop_is_busy() -> None:
    """Under overload the event loop is busy refusing requests; inference must not wait for it. Three full
    batches are queued behind a held one; while the loop is blocked (time.sleep on it), the worker runs all
    of them, and the answers arrive once the loop is free again, each equal to the unbatched result."""
    backend = FakeBackend()
    ran_at: list[float] = []
    original = backend.infer
    entered = threading.Event()

    def timed(inputs, output_names):
        entered.set()
        outputs = original(inputs, output_names)
        ran_at.append(time.monotonic())
        return outputs

    backend.infer = timed

    async def scenario():
        batcher = make_batcher(backend, max_batch_size=4, delay_ms=1000, queue=32)
        batcher.start()
        backend.released.clear()
        tasks = [asyncio.create_task(batcher.submit(sample(float(v)), ["double"])) for v in range(16)]
        while batcher.pending > 12 or not entered.is_set():  # one batch of 4 held in the backend, 3 queued
            await asyncio.sleep(0.005)
        blocked_from = time.monotonic()
        backend.released.set()
        time.sleep(0.5)  # the loop is busy: no callback, no scheduling
        blocked_until = time.monotonic()
        results = await asyncio.gather(*tasks)
        await batcher.stop()
        return results, blocked_from, blocked_until

    results, blocked_from, blocked_until = run(scenario())
    assert backend.batches == [4, 4, 4, 4]
    assert all(blocked_from <= moment <= blocked_until for moment in ran_at)
    assert [r["double"].tolist() for r in results] == [[4.0 * v] for v in range(16)]
