"""Task handlers: one small class per REST verb (classify, detect, segment, explain), see `tasks.base`.

Adding a task means one handler module here and its entry below; the request line (service.runner),
the batcher and the backends stay as they are.
"""

from __future__ import annotations

from service.tasks.base import Encoded, TaskHandler, TaskParams, TaskRequest
from service.tasks.classification import ClassificationHandler, ClassifyParams
from service.tasks.detection import DetectionHandler, DetectParams
from service.tasks.explain import ExplainHandler, ExplainParams
from service.tasks.segmentation import SegmentationHandler

CLASSIFY = ClassificationHandler()
DETECT = DetectionHandler()
SEGMENT = SegmentationHandler()
EXPLAIN = ExplainHandler()
HANDLERS: dict[str, TaskHandler] = {handler.verb: handler for handler in (CLASSIFY, DETECT, SEGMENT, EXPLAIN)}

__all__ = [
    "CLASSIFY", "DETECT", "EXPLAIN", "HANDLERS", "SEGMENT", "ClassifyParams", "DetectParams", "Encoded",
    "ExplainParams", "TaskHandler", "TaskParams", "TaskRequest",
]
