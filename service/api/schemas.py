"""Response and request schemas of the /v1 API (also its OpenAPI documentation)."""

from __future__ import annotations

from typing import Any

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


# ------------------------------------------------------------------------------------- operations
class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool
    failed: dict[str, str] | None = Field(None, description="models that failed to load, and why")
    shutting_down: bool | None = Field(None, description="present once shutdown started")


# ----------------------------------------------------------------- KServe v2 / Open Inference Protocol
class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str = Field(description="BOOL, UINT8…UINT64, INT8…INT64, FP16, FP32, FP64 or BYTES")
    shape: list[int] = Field(description="-1 marks a variable dimension")


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]
    description: str | None = None
    warning: str | None = None


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2RequestInput(BaseModel):
    name: str = Field(description="`pixel_values` (FP32, preprocessed) or any name for a BYTES tensor of images")
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(None, description="`binary_data_size`: bytes of this input in the "
                                              "binary part of the body (Triton's binary tensor extension)")
    data: list[Any] | None = Field(None, description="flat or nested values; BYTES as base64 strings")


class V2RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(None, description="`binary_data` (bool), `classification` (top-k)")


class V2InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="`timeout` (µs), `binary_data_output` (bool)")
    inputs: list[V2RequestInput] = Field(min_length=1)
    outputs: list[V2RequestOutput] | None = None


class V2ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(None, description="`binary_data_size` when sent as binary")
    data: list[Any] | None = None


class V2InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2ResponseOutput]


class V2RepositoryModel(BaseModel):
    name: str
    version: str
    state: str = Field(description="READY or UNAVAILABLE")
    reason: str


class V2Duration(BaseModel):
    count: int
    ns: int


class V2BatchStats(BaseModel):
    batch_size: int
    compute_input: V2Duration
    compute_infer: V2Duration
    compute_output: V2Duration


class V2ModelStats(BaseModel):
    name: str
    version: str
    last_inference: int
    inference_count: int
    execution_count: int
    inference_stats: dict[str, V2Duration]
    batch_stats: list[V2BatchStats]


class V2Statistics(BaseModel):
    model_stats: list[V2ModelStats]
