"""Response and request schemas of the /v1 API (also its OpenAPI documentation)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModelDescription(BaseModel):
    name: str
    description: str | None = Field(None, description="what the model is and what it answers well")
    warning: str | None = Field(None, description="what to know before trusting its answers (e.g. random weights)")
    weights: str | None = Field(None, description="where the weights came from: file and sha256, or random")
    task: str | None
    backend: str
    version: str
    ready: bool
    arch: str | None = None
    labels: str | None = Field(None, description="label-set name")
    num_labels: int | None = None
    max_batch_size: int
    instances: int
    input_size: list[int] | None = Field(None, description="[H, W] when every input has the same size")
    preprocess: str | None = Field(None, description="resize policy")
    explain_stages: list[int] = Field(default_factory=list, description="backbone stages with cluster maps")


class ModelList(BaseModel):
    models: list[ModelDescription]


class EncodedImage(BaseModel):
    b64: str = Field(description="base64 of an encoded image file (JPEG, PNG, WebP, TIFF, BMP, GIF)")


class ImagesRequest(BaseModel):
    images: list[EncodedImage] = Field(min_length=1)


class ClassScore(BaseModel):
    index: int
    label: str
    score: float = Field(description="softmax probability")


class ClassificationResult(BaseModel):
    top_k: list[ClassScore]


class RLE(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE (pycocotools), column-major")


class Detection(BaseModel):
    box: list[float] = Field(description="[x1, y1, x2, y2] in original-image pixels")
    index: int
    label: str
    score: float
    mask: RLE | None = None


class DetectionResult(BaseModel):
    detections: list[Detection]


class SegmentClass(BaseModel):
    index: int
    label: str
    area: int = Field(description="pixels of this class in the original image")
    rle: RLE


class SegmentationResult(BaseModel):
    width: int
    height: int
    classes: list[SegmentClass]


class StageClusters(BaseModel):
    stage: int
    clusters: int
    height: int
    width: int
    assignment: list[list[int]] = Field(description="for every patch of the stage's grid, the cluster claiming it most")
    confidence: list[list[float]] = Field(description="that cluster's share of the patch's total assignment weight")
    overlay_png: str = Field(description="base64 PNG: the assignment coloured over the original image")


class ExplainResult(BaseModel):
    width: int
    height: int
    stages: list[StageClusters]


class ClassifyResponse(BaseModel):
    model: str
    results: list[ClassificationResult]
    warning: str | None = Field(None, description="present when the model's answers are not to be trusted")


class DetectResponse(BaseModel):
    model: str
    results: list[DetectionResult]
    warning: str | None = Field(None, description="present when the model's answers are not to be trusted")


class SegmentResponse(BaseModel):
    model: str
    results: list[SegmentationResult]
    warning: str | None = Field(None, description="present when the model's answers are not to be trusted")


class ExplainResponse(BaseModel):
    model: str
    results: list[ExplainResult]
    warning: str | None = Field(None, description="present when the model's answers are not to be trusted")


class ErrorResponse(BaseModel):
    error: str
    request_id: str | None = None
