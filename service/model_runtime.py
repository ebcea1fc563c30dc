"""A served model at run time: its backend instances, what the artifact says it is, and its batcher."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from export.metadata import ArtifactMetadata
from models.tasks import cluster_stage
from service.backends import Backend, TensorSpec, create_backend
from service.batcher import DynamicBatcher, Reservation
from service.errors import BadRequest, ModelNotFound, NotReady
from service.metrics import Metrics
from service.prepare import prepare_decoded, synthetic_image
from service.repository import ModelConfig, RepositoryConfig
from service.stats import ModelStats
from service.timing import RequestTimings

log = logging.getLogger("paca.models")
BANNER = "!" * 100


def resolve_artifact(config: ModelConfig, *, quiet: bool = False) -> ModelConfig:
    """The config itself if its artifact exists; else its pre-exported untrained stand-in, loudly; else an error.

    The server never exports: `paca demo ensure` writes the demo artifacts, `paca export` any other.
    """
    if config.artifact is None or config.artifact.exists() or config.backend != "onnxruntime":
        return config
    if config.fallback_arch is not None:
        stand_in = (config.artifact.parent.parent / "fallback" / f"{config.fallback_arch}.onnx").resolve()
        if stand_in.exists():
            if quiet:
                return config.model_copy(update={"artifact": stand_in})
            log.warning(
                "%s\nmodel %r: artifact %s is missing; serving arch %s with UNTRAINED (random) weights from %s.\n"
                "Its predictions are meaningless. Run `paca demo ensure` (or `make run`) to build the trained "
                "artifacts.\n%s", BANNER, config.name, config.artifact, config.fallback_arch, stand_in, BANNER,
            )
            return config.model_copy(update={"artifact": stand_in})
    raise FileNotFoundError(f"model {config.name!r}: artifact {config.artifact} does not exist; run "
                            "`paca demo ensure` for the demo models, or `paca export` for your own")


class ServedModel:
    """One repository entry: load → warm up → serve through the batcher."""

    def __init__(self, config: ModelConfig, *, metrics: Metrics | None = None) -> None:
        self.config = config
        self.name = config.name
        self.stats = ModelStats(config.name, config.version)
        self.backends: list[Backend] = []
        self.info: ArtifactMetadata | None = None
        self.batcher: DynamicBatcher | None = None
        self.ready = False
        self.error: str | None = None
        self._metrics = metrics

    # ------------------------------------------------------------------------------------------ lifecycle
    def load(self) -> None:
        """Blocking: open one backend per instance and read the model's self-description."""
        config = resolve_artifact(self.config)
        self.config = config
        self.backends = [create_backend(config, i) for i in range(config.instances)]
        first = self.backends[0]
        self.info = ArtifactMetadata.from_props(
            first.metadata(), lenient=first.partial_metadata or config.task is not None, task=config.task,
            available_outputs=[o.name for o in first.outputs()],
        )
        if "pixel_values" not in {i.name for i in first.inputs()}:
            raise ValueError(f"model {self.name!r}: the artifact has no 'pixel_values' input")
        if config.description is not None:
            self.info = dataclasses.replace(self.info, description=config.description)
        if self.info.random_weights:
            log.warning("%s\nmodel %r (arch %s) has RANDOM weights: its answers are meaningless.\n%s",
                        BANNER, self.name, self.info.arch, BANNER)
        log.info("model %s loaded: task=%s arch=%s backend=%s instances=%d", self.name, self.info.task,
                 self.info.arch, config.backend, config.instances)

    def start(self) -> None:
        assert self.info is not None
        metrics = self._metrics
        self.batcher = DynamicBatcher(
            self.name,
            self.backends,
            max_batch_size=self.max_batch_size,
            batching=self.config.batching,
            stats=self.stats,
            batchable=self.batchable,
            on_batch=metrics.batch_size.labels(model=self.name).observe if metrics else None,
            on_queued=metrics.queue_latency.labels(model=self.name).observe if metrics else None,
        )
        self.batcher.start()

    def warmup(self) -> int:
        """Blocking: run every served batch size (and warm-up image size) on every instance once or more."""
        if not self.config.warmup.enabled:
            return 0
        runs = 0
        for sample in self._warmup_samples():
            for batch_size in self.warmup_batch_sizes():
                inputs = {"pixel_values": np.repeat(sample, batch_size, axis=0)}
                for backend in self.backends:
                    for _ in range(self.config.warmup.count):
                        backend.infer(inputs, self.info.outputs)
                        runs += 1
        return runs

    def warmup_batch_sizes(self) -> list[int]:
        if self.config.warmup.batch_sizes:
            return [b for b in self.config.warmup.batch_sizes if 1 <= b <= self.max_batch_size]
        return list(range(1, self.max_batch_size + 1))

    def _warmup_samples(self) -> list[np.ndarray]:
        assert self.info is not None
        sizes = [self.info.preprocess.fixed_input_size] if self.info.preprocess.fixed_input_size else []
        sizes = sizes or list(self.config.warmup.image_sizes)
        return [prepare_decoded(synthetic_image(height, width), self.info).pixel_values for height, width in sizes]

    async def drain(self, timeout_s: float) -> None:
        self.ready = False
        if self.batcher is not None:
            await self.batcher.drain(timeout_s)

    async def stop(self) -> None:
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()

    # ------------------------------------------------------------------------------------------ facts
    @property
    def task(self) -> str:
        assert self.info is not None
        return self.info.task

    @property
    def batchable(self) -> bool:
        """Whether images of one size share a backend run (the task's fact, `models.tasks`)."""
        return self.info is not None and self.info.task_spec.batchable

    @property
    def max_batch_size(self) -> int:
        return self.config.max_batch_size if self.batchable else 1

    @property
    def backend_name(self) -> str:
        return self.config.backend

    @property
    def instance_kind(self) -> str:
        return "KIND_GPU" if self.backends and self.backends[0].on_gpu else "KIND_CPU"

    @property
    def platform(self) -> str:
        return self.backends[0].platform if self.backends else self.config.backend

    def inputs(self) -> Sequence[TensorSpec]:
        return self.backends[0].inputs()

    def outputs(self) -> Sequence[TensorSpec]:
        assert self.info is not None
        by_name = {o.name: o for o in self.backends[0].outputs()}
        return [by_name[name] for name in self.info.outputs]

    def describe(self) -> dict[str, Any]:
        info = self.info
        return {
            "name": self.name,
            "description": (info.description if info else self.config.description) or None,
            "warning": info.warning if info else None,
            "weights": info.weights if info else None,
            "task": info.task if info else self.config.task,
            "backend": self.config.backend,
            "version": self.config.version,
            "ready": self.ready,
            "arch": info.arch if info else None,
            "labels": info.labels if info else None,
            "num_labels": len(info.label_names) if info else None,
            "max_batch_size": self.max_batch_size,
            "instances": self.config.instances,
            "input_size": list(info.preprocess.fixed_input_size or []) or None if info else None,
            "preprocess": info.preprocess.resize_mode if info else None,
            "explain_stages": [cluster_stage(n) for n in info.cluster_outputs] if info else [],
        }

    # ------------------------------------------------------------------------------------------- infer
    def reserve(self, count: int) -> Reservation:
        """Hold `count` places in the model's queue while a request's images are decoded (see DynamicBatcher)."""
        if not self.ready or self.batcher is None:
            raise NotReady(f"model {self.name!r} is not ready")
        return self.batcher.reserve(count)

    async def infer(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str], *, timeout_s: float | None = None,
        arrived: float | None = None, reservation: Reservation | None = None, timings: RequestTimings | None = None,
    ) -> dict[str, np.ndarray]:
        if not self.ready or self.batcher is None:
            raise NotReady(f"model {self.name!r} is not ready")
        return await self.batcher.submit(inputs, output_names, timeout_s=timeout_s, arrived=arrived,
                                         reservation=reservation, timings=timings)


class ModelLoadError(RuntimeError):
    """A model could not be loaded or warmed up."""


class ModelManager:
    """All served models. The server is ready when every model has loaded and warmed up, and until shutdown
    starts. A model that fails to load either stops the server (`exit_on_error`) or leaves the others
    serving while readiness names it."""

    def __init__(self, repository: RepositoryConfig, *, metrics: Metrics | None = None) -> None:
        self.models: dict[str, ServedModel] = {m.name: ServedModel(m, metrics=metrics) for m in repository.models}
        self.started = False
        self.shutting_down = False

    @property
    def ready(self) -> bool:
        return self.started and not self.shutting_down and all(m.ready for m in self.models.values())

    @property
    def failed(self) -> dict[str, str]:
        return {name: model.error for name, model in self.models.items() if model.error}

    def get(self, name: str, *, task: str | None = None, ready: bool = True) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"unknown model {name!r}; served models: {known}")
        if ready and not model.ready:
            reason = f"failed to load: {model.error}" if model.error else "loading or warming up"
            raise NotReady(f"model {name!r} is not ready ({reason})")
        if task is not None and model.info is not None and model.task != task:
            verb = model.info.task_spec.verb
            raise BadRequest(f"model {name!r} is a {model.task} model; use /v1/models/{name}/{verb}")
        return model

    async def start(self, *, exit_on_error: bool = True) -> None:
        """Load and warm up every model (in worker threads). A failure is recorded on its model; with
        `exit_on_error` it is raised as ModelLoadError after being logged."""
        for model in self.models.values():
            try:
                await asyncio.to_thread(model.load)
                model.start()
                runs = await asyncio.to_thread(model.warmup)
            except Exception as exc:
                model.error = f"{type(exc).__name__}: {exc}"
                log.error("model %s failed to load: %s", model.name, model.error, exc_info=True)
                if exit_on_error:
                    raise ModelLoadError(f"model {model.name!r}: {model.error}") from exc
                continue
            model.ready = True
            log.info("model %s ready after %d warm-up runs", model.name, runs)
        self.started = True

    def begin_shutdown(self) -> None:
        """Readiness turns false at once (load balancers stop sending); requests are still served."""
        self.shutting_down = True

    async def stop(self, drain_timeout_s: float) -> None:
        self.shutting_down = True
        await asyncio.gather(*(m.drain(drain_timeout_s) for m in self.models.values()))
        await asyncio.gather(*(m.stop() for m in self.models.values()))
