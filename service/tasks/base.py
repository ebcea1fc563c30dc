"""The shape every task handler has: the task-specific steps around the request line that all tasks share.

The line (service.runner): read images → decode + preprocess (service.prepare) → batcher → backend →
`postprocess` each image's outputs → `respond` (encode the answer). A handler says which outputs it needs,
what one image's answer is, and how the answers are encoded; `check` refuses a request before any image
is decoded. Postprocess and respond run together in the worker pool, never on the event loop.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import numpy as np
from pydantic import BaseModel, Field

from export.metadata import ArtifactMetadata
from service.prepare import PreparedImage

JSON = "application/json"


class TaskParams(BaseModel):
    """Query parameters every task endpoint takes."""

    timeout_ms: float | None = Field(None, gt=0, description="queue deadline for this request (may only lower "
                                                              "the model's)")


P = TypeVar("P", bound=TaskParams)
R = TypeVar("R")


@dataclass(frozen=True)
class TaskRequest(Generic[P]):
    """What a handler may look at besides the images: the parsed query and the Accept header."""

    params: P
    accept: str = ""


@dataclass(frozen=True)
class Encoded:
    body: bytes
    media_type: str = JSON


class TaskHandler(abc.ABC, Generic[P, R]):
    verb: ClassVar[str]  # /v1/models/{name}/{verb}
    task: ClassVar[str | None]  # the task a model must have; None = any
    response_model: ClassVar[type[BaseModel]]

    def check(self, model: str, info: ArtifactMetadata, request: TaskRequest[P],
              image_count: int) -> None:
        """Refuse (raise a ServiceError) what cannot be answered, before any image is decoded."""

    @abc.abstractmethod
    def outputs(self, info: ArtifactMetadata, request: TaskRequest[P]) -> Sequence[str]:
        """The model outputs this request needs (only these are computed and returned by the backend)."""

    @abc.abstractmethod
    def postprocess(self, outputs: Mapping[str, np.ndarray], image: PreparedImage, info: ArtifactMetadata,
                    request: TaskRequest[P]) -> R:
        """One image's answer from its outputs (batch dimension 1), in the original image's pixels."""

    def respond(self, model: str, results: list[R], request: TaskRequest[P], info: ArtifactMetadata) -> Encoded:
        """The HTTP body: the declared response model, serialised (with the model's warning, if it has one)."""
        answer = self.response_model(model=model, results=results, warning=info.warning)
        return Encoded(answer.model_dump_json(exclude_none=True).encode())
