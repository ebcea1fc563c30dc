"""The model repository: a YAML file declaring what is served and how (Triton's config.pbtxt, as YAML).

Example::

    base_dir: ..                      # relative artifact paths resolve against this (default: the YAML's folder)
    models:
      - name: demo-digits-classifier
        artifact: artifacts/demo/demo-digits-classifier.onnx
        backend: onnxruntime          # onnxruntime | tensorrt | torch | triton
        max_batch_size: 8
        batching: {max_queue_delay_ms: 2, max_queue_size: 64, queue_timeout_ms: 10000}
        instances: 1
        warmup: {enabled: true}
        options: {intra_op_threads: 1, allow_spinning: false}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.tasks import Task

BackendName = Literal["onnxruntime", "tensorrt", "torch", "triton"]


class BatchingConfig(BaseModel):
    """Dynamic batcher and queue policy of one model (Triton's dynamic_batching + default_queue_policy)."""

    model_config = ConfigDict(extra="forbid")

    max_queue_delay_ms: float = Field(2.0, ge=0, description="0 = never wait for more requests")
    max_queue_size: int = Field(128, ge=1, description="requests waiting beyond this are rejected with 503")
    queue_timeout_ms: float = Field(30_000, ge=0, description="queue deadline; 0 = none. Expired → 504")
    allow_timeout_override: bool = Field(True, description="a request may lower (never raise) its deadline")
    policy: Literal["adaptive", "delay"] = Field(
        "adaptive", description="adaptive: close a batch at once when an instance is free and no other request "
        "is on its way; delay: always wait up to max_queue_delay_ms (Triton's behaviour)")


class WarmupConfig(BaseModel):
    """Warm-up runs before the model reports ready, so no client pays for first-run initialisation."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    batch_sizes: list[int] | None = Field(None, description="default: every size 1..max_batch_size")
    image_sizes: list[tuple[int, int]] = Field(
        default_factory=lambda: [(480, 640)], description="(H, W) of synthetic images for variable-size models"
    )
    count: int = Field(1, ge=1)


class ModelConfig(BaseModel):
    """One served model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    backend: BackendName = "onnxruntime"
    artifact: Path | None = Field(None, description="ONNX file, or TensorRT engine (manifest next to it)")
    task: Task | None = Field(None, description="default: read from the artifact's metadata")
    version: str = "1"
    description: str | None = Field(None, description="what the model is, for people (default: the artifact's)")
    max_batch_size: int = Field(8, ge=1)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    instances: int = Field(1, ge=1, description="parallel workers, each with its own session")
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    options: dict[str, Any] = Field(default_factory=dict, description="backend-specific settings")
    arch: str | None = Field(None, description="torch backend: registered arch name")
    checkpoint: Path | None = Field(None, description="torch backend: weights")
    fallback_arch: str | None = Field(
        None, description="if the artifact is missing, serve <artifacts>/fallback/<arch>.onnx, an UNTRAINED export "
        "made beforehand (`paca export --arch A --output ...`), with a loud warning"
    )

    @model_validator(mode="after")
    def _needs_a_source(self) -> ModelConfig:
        if self.backend in ("onnxruntime", "tensorrt") and self.artifact is None:
            raise ValueError(f"model {self.name!r}: backend {self.backend} needs 'artifact'")
        if self.backend == "torch" and self.arch is None and self.artifact is None:
            raise ValueError(f"model {self.name!r}: backend torch needs 'arch' (or an ONNX 'artifact' for metadata)")
        if self.backend == "triton" and "url" not in self.options:
            raise ValueError(f"model {self.name!r}: backend triton needs options.url")
        return self


class RepositoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_dir: Path | None = None
    models: list[ModelConfig]

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate model names: {duplicates}")
        if not models:
            raise ValueError("the repository declares no models")
        return models


def load_repository(path: str | Path) -> RepositoryConfig:
    """Read and validate a repository YAML; relative paths become absolute against base_dir."""
    path = Path(path).resolve()
    data = yaml.safe_load(path.read_text()) or {}
    repo = RepositoryConfig.model_validate(data)
    base = path.parent if repo.base_dir is None else (path.parent / repo.base_dir).resolve()
    return resolve_paths(repo, base)


def resolve_paths(repo: RepositoryConfig, base: Path) -> RepositoryConfig:
    models = []
    for model in repo.models:
        updates: dict[str, Any] = {}
        for key in ("artifact", "checkpoint"):
            value = getattr(model, key)
            if value is not None and not value.is_absolute():
                updates[key] = (base / value).resolve()
        models.append(model.model_copy(update=updates))
    return RepositoryConfig(base_dir=base, models=models)
