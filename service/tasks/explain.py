"""explain: per-stage cluster maps — which learned cluster claims each patch — as arrays and PNG overlays."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image
from pydantic import Field

from export.metadata import ArtifactMetadata
from models.tasks import cluster_stage
from service.api.schemas import ExplainResponse, ExplainResult, StageClusters
from service.errors import BadRequest
from service.prepare import PreparedImage
from service.tasks.base import TaskHandler, TaskParams, TaskRequest
from service.tasks.palette import distinct_colours


class ExplainParams(TaskParams):
    alpha: float = Field(0.55, ge=0.0, le=1.0, description="overlay opacity")


def overlay_png(assignment: np.ndarray, prepared: PreparedImage, clusters: int, alpha: float) -> bytes:
    """Colour each image pixel by the cluster of the patch it fell into, blended over the original image."""
    meta = prepared.meta
    input_h, input_w = meta.input_hw
    colours = distinct_colours(clusters)[assignment]  # (h, w, 3)
    patch_image = Image.fromarray(colours).resize((input_w, input_h), Image.Resampling.NEAREST)
    resized_h, resized_w = meta.resized_hw
    offset_y, offset_x = meta.crop_offset_yx
    # The model input is a window of the resized image (centre crop) or the resized image plus padding.
    canvas = Image.new("RGB", (resized_w, resized_h))
    covered = Image.new("L", (resized_w, resized_h), 0)
    canvas.paste(patch_image, (offset_x, offset_y))
    covered.paste(255, (offset_x, offset_y, min(offset_x + input_w, resized_w), min(offset_y + input_h, resized_h)))
    original = prepared.image
    canvas = canvas.resize(original.size, Image.Resampling.NEAREST)
    covered = covered.resize(original.size, Image.Resampling.NEAREST)
    blended = Image.blend(original, canvas, alpha)
    result = Image.composite(blended, original, covered)
    buffer = io.BytesIO()
    result.save(buffer, format="PNG")
    return buffer.getvalue()


class ExplainHandler(TaskHandler[ExplainParams, ExplainResult]):
    verb = "explain"
    task = None
    response_model = ExplainResponse

    def check(self, model: str, info: ArtifactMetadata, request: TaskRequest[ExplainParams],
              image_count: int) -> None:
        if not info.cluster_outputs:
            raise BadRequest(f"model {model!r} exports no cluster maps (no clusters_stage* outputs)")

    def outputs(self, info: ArtifactMetadata, request: TaskRequest[ExplainParams]) -> Sequence[str]:
        return info.cluster_outputs

    def postprocess(self, outputs: Mapping[str, np.ndarray], image: PreparedImage, info: ArtifactMetadata,
                    request: TaskRequest[ExplainParams]) -> ExplainResult:
        stages = []
        for name in sorted(outputs, key=lambda n: cluster_stage(n) or 0):
            maps = outputs[name][0]  # (M, h, w): per cluster a distribution over the stage's patches
            clusters, h, w = maps.shape
            assignment = maps.argmax(axis=0)
            weight = maps.max(axis=0) / np.maximum(maps.sum(axis=0), 1e-12)
            overlay = overlay_png(assignment, image, clusters, request.params.alpha)
            stages.append(StageClusters(
                stage=cluster_stage(name) or 0, clusters=int(clusters), height=int(h), width=int(w),
                assignment=assignment.astype(int).tolist(), confidence=np.round(weight, 4).tolist(),
                overlay_png=base64.b64encode(overlay).decode("ascii"),
            ))
        return ExplainResult(width=image.image.width, height=image.image.height, stages=stages)
