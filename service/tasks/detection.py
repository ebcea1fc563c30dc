"""detect: boxes, labels and scores above a threshold, with instance masks as COCO RLE, in original pixels.

The model gives each image a fixed number of rows, the first `num_detections` of them real (best first),
so images of one size can share a batch; only the real rows are thresholded and answered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import Field

from export.metadata import ArtifactMetadata
from models.postprocess import paste_mask_windows, rescale_boxes
from service.api.schemas import Detection, DetectionResult, DetectResponse
from service.prepare import PreparedImage
from service.tasks.base import TaskHandler, TaskParams, TaskRequest
from service.tasks.rle import window_rle


def real_rows(outputs: Mapping[str, np.ndarray]) -> int:
    """How many of one image's padded rows are detections (`num_detections`); the rest are padding."""
    return int(np.asarray(outputs["num_detections"]).reshape(-1)[0])


# mmdet's inference default (`DetInferencer(pred_score_thr=0.3)`); `paca demo eval` measures the demo
# detector's found/precision figures at this threshold.
DEFAULT_SCORE_THRESHOLD = 0.3


class DetectParams(TaskParams):
    score_threshold: float = Field(
        DEFAULT_SCORE_THRESHOLD, ge=0.0, le=1.0, description="drop detections scoring below this"
    )
    masks: bool = Field(True, description="include instance masks as COCO RLE")


class DetectionHandler(TaskHandler[DetectParams, DetectionResult]):
    verb = "detect"
    task = "detection"
    response_model = DetectResponse

    def outputs(self, info: ArtifactMetadata, request: TaskRequest[DetectParams]) -> Sequence[str]:
        return [name for name in info.main_outputs if request.params.masks or name != "mask_probs"]

    def postprocess(self, outputs: Mapping[str, np.ndarray], image: PreparedImage, info: ArtifactMetadata,
                    request: TaskRequest[DetectParams]) -> DetectionResult:
        meta = image.meta
        real = real_rows(outputs)
        scores = np.asarray(outputs["scores"], dtype=np.float32).reshape(-1)[:real]
        keep = np.flatnonzero(scores >= request.params.score_threshold)
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        boxes = rescale_boxes(np.asarray(outputs["boxes"], dtype=np.float32).reshape(-1, 4)[keep], meta.scale_yx)
        height, width = meta.original_hw
        boxes = np.clip(boxes, 0, [width, height, width, height])
        labels = np.asarray(outputs["labels"]).reshape(-1)[keep].astype(np.int64)
        masks = [None] * len(keep)
        if request.params.masks and len(keep):
            mask_probs = np.asarray(outputs["mask_probs"])
            mask_probs = mask_probs.reshape(-1, *mask_probs.shape[-2:])
            windows = paste_mask_windows(mask_probs[keep], boxes, meta.original_hw)
            masks = [window_rle(top, left, window, height, width) for top, left, window in windows]
        return DetectionResult(detections=[
            Detection(box=[round(float(v), 2) for v in box], index=int(label), label=info.label(int(label)),
                      score=float(score), mask=mask)
            for box, label, score, mask in zip(boxes, labels, scores[keep], masks, strict=True)
        ])
