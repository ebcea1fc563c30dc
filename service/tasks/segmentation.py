"""segment: a class per pixel of the original image, as per-class COCO RLE (JSON) or a PNG label map."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from export.metadata import ArtifactMetadata
from models.postprocess import segmentation_label_map
from service.api.schemas import SegmentationResult, SegmentClass, SegmentResponse
from service.errors import BadRequest, NotAcceptable
from service.prepare import PreparedImage
from service.tasks.base import Encoded, TaskHandler, TaskParams, TaskRequest
from service.tasks.palette import class_palette
from service.tasks.rle import label_map_rles

PNG = "image/png"


def wants_png(accept: str) -> bool:
    """`Accept: image/png` asks for the label map as an image; JSON otherwise; anything else is refused."""
    media = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    if PNG in media:
        return True
    if media and not any(m in ("application/json", "*/*", "application/*") for m in media):
        raise NotAcceptable(f"cannot produce {accept!r}; segment returns application/json or image/png")
    return False


def label_map_png(label_map: np.ndarray) -> bytes:
    """The class-index map as a PNG. Up to 256 classes a palette PNG: each pixel's value is its class index
    (read it with `numpy.asarray(Image.open(...))`) and the palette colours the classes for viewing. Beyond
    that, 16-bit grayscale of the indices."""
    buffer = io.BytesIO()
    if label_map.max(initial=0) < 256:
        image = Image.fromarray(label_map.astype(np.uint8), mode="P")
        image.putpalette(class_palette())
    else:
        image = Image.fromarray(label_map.astype(np.uint16))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def segmentation_result(label_map: np.ndarray, info: ArtifactMetadata) -> SegmentationResult:
    height, width = label_map.shape
    return SegmentationResult(width=int(width), height=int(height), classes=[
        SegmentClass(index=index, label=info.label(index), area=area, rle=rle)
        for index, area, rle in label_map_rles(label_map)
    ])


class SegmentationHandler(TaskHandler[TaskParams, "SegmentationResult | np.ndarray"]):
    verb = "segment"
    task = "segmentation"
    response_model = SegmentResponse

    def check(self, model: str, info: ArtifactMetadata, request: TaskRequest[TaskParams],
              image_count: int) -> None:
        if wants_png(request.accept) and image_count != 1:
            raise BadRequest(f"Accept: image/png returns one label map; send exactly one image (got {image_count})")

    def outputs(self, info: ArtifactMetadata, request: TaskRequest[TaskParams]) -> Sequence[str]:
        return info.main_outputs

    def postprocess(self, outputs: Mapping[str, np.ndarray], image: PreparedImage, info: ArtifactMetadata,
                    request: TaskRequest[TaskParams]) -> SegmentationResult | np.ndarray:
        meta = image.meta
        label_map = segmentation_label_map(outputs["seg_logits"][0], meta.resized_hw, meta.original_hw, meta.input_hw)
        return label_map if wants_png(request.accept) else segmentation_result(label_map, info)

    def respond(self, model: str, results: list, request: TaskRequest[TaskParams], info: ArtifactMetadata) -> Encoded:
        if wants_png(request.accept):
            return Encoded(label_map_png(results[0]), PNG)
        return super().respond(model, results, request, info)
