"""classify: the top-k classes of each image, as softmax probabilities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import Field

from export.metadata import ArtifactMetadata
from service.api.schemas import ClassificationResult, ClassifyResponse, ClassScore
from service.prepare import PreparedImage
from service.tasks.base import TaskHandler, TaskParams, TaskRequest


class ClassifyParams(TaskParams):
    k: int = Field(5, ge=1, le=1000, description="classes to return per image")


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def top_k(logits: np.ndarray, info: ArtifactMetadata, k: int) -> list[ClassScore]:
    """Highest-probability classes of one image's logits (K,); ties broken by index."""
    probabilities = softmax(logits)
    k = min(k, probabilities.shape[0])
    order = np.lexsort((np.arange(probabilities.shape[0]), -probabilities))[:k]
    return [ClassScore(index=int(i), label=info.label(int(i)), score=float(probabilities[i])) for i in order]


class ClassificationHandler(TaskHandler[ClassifyParams, ClassificationResult]):
    verb = "classify"
    task = "classification"
    response_model = ClassifyResponse

    def outputs(self, info: ArtifactMetadata, request: TaskRequest[ClassifyParams]) -> Sequence[str]:
        return info.main_outputs

    def postprocess(self, outputs: Mapping[str, np.ndarray], image: PreparedImage, info: ArtifactMetadata,
                    request: TaskRequest[ClassifyParams]) -> ClassificationResult:
        return ClassificationResult(top_k=top_k(outputs["logits"][0], info, request.params.k))
