"""ONNX artifacts for the service tests, written per cross-team contract 1 (inputs, outputs, metadata).

- classification: a real PaCa-ViT classifier (`tiny_digits_cls`, the first demo configuration, random
  weights) through `export.export_onnx` — the production exporter, custom op, cluster outputs and all.
- segmentation / detection: small convolutional networks exported with torch.onnx, because the PaCa
  detector/segmentor exports take minutes on the CI machine; they have the contract's exact
  inputs/outputs/metadata, dynamic H/W and image-dependent outputs, which is what the service sees.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.nn import functional as F

from models.preprocess_spec import PreprocessSpec

CLASSIFIER, SEGMENTER, DETECTOR = "paca-digits", "tiny-seg", "tiny-det"
GOLDEN_ARCH = "pacavit_tiny_p2cconv_100_0"
GOLDEN_WEIGHTS = f"golden_{GOLDEN_ARCH}.safetensors"
GOLDEN_IO = f"golden_{GOLDEN_ARCH}_io.safetensors"

SCENE_PREPROCESS = PreprocessSpec(resize_mode="keep_ratio_within", size=(128, 128), interpolation="bilinear",
                                  pad_divisor=32)
SEG_LABELS = ["background", "red", "green", "blue", "bright"]
DET_LABELS = ["circle", "square", "triangle"]
DETECTIONS = 6  # padded rows per image
REAL_SCORE = 0.25  # TinyDetector rows scoring above this are detections, the others padding


def _cluster_map(features: torch.Tensor) -> torch.Tensor:
    """(B, M, h, w): per cluster a softmax over the patch grid, like PaCa's assignments."""
    return torch.softmax(features.flatten(2), dim=-1).reshape(features.shape)


class TinySegmenter(nn.Module):
    """Stride-4 features → per-class logits at ⌈H/4⌉ × ⌈W/4⌉ (contract 1) + one cluster map."""

    def __init__(self, classes: int = len(SEG_LABELS)) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, kernel_size=3, stride=4, padding=1)
        self.mix = nn.Conv2d(16, 16, kernel_size=3, padding=1)
        self.head = nn.Conv2d(16, classes, kernel_size=1)
        self.clusters = nn.Conv2d(16, 4, kernel_size=1)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = F.gelu(self.mix(F.gelu(self.stem(pixel_values))))
        return self.head(features), _cluster_map(self.clusters(features))


class TinyDetector(nn.Module):
    """Images of one size → per image DETECTIONS padded rows (contract 1): boxes in the input's pixel frame,
    scores, 0-based labels, 28×28 mask probabilities, best first; `num_detections` of them are real (score
    above REAL_SCORE), the rest are zeros. Everything is computed per image, so batching changes nothing."""

    def __init__(self, classes: int = len(DET_LABELS), detections: int = DETECTIONS) -> None:
        super().__init__()
        self.k = detections
        self.classes = classes
        self.stem = nn.Conv2d(3, 16, kernel_size=3, stride=4, padding=1)
        self.box = nn.Linear(32, detections * 4)
        self.score = nn.Linear(32, detections)
        self.cls = nn.Linear(32, detections * classes)
        self.mask = nn.Conv2d(16, detections, kernel_size=3, padding=1)
        self.clusters = nn.Conv2d(16, 4, kernel_size=1)

    def forward(self, pixel_values: torch.Tensor):
        batch, height, width = pixel_values.shape[0], pixel_values.shape[2], pixel_values.shape[3]
        features = F.gelu(self.stem(pixel_values))
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        raw = torch.sigmoid(self.box(pooled)).reshape(batch, self.k, 4)
        scale = torch.stack([width, height, width, height]).to(pixel_values.dtype) if isinstance(
            width, torch.Tensor) else torch.tensor([width, height, width, height], dtype=pixel_values.dtype)
        x1y1 = raw[..., :2] * 0.6
        x2y2 = x1y1 + 0.05 + raw[..., 2:] * 0.35
        boxes = torch.cat([x1y1, x2y2], dim=-1) * scale
        scores = torch.sigmoid(self.score(pooled) * 4.0)
        labels = self.cls(pooled).reshape(batch, self.k, self.classes).argmax(dim=-1)
        masks = torch.sigmoid(F.interpolate(self.mask(features), size=(28, 28), mode="bilinear") * 8.0)
        scores, order = scores.topk(self.k, dim=1)  # best first
        boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4))
        labels = torch.gather(labels, 1, order)
        masks = torch.gather(masks, 1, order[..., None, None].expand(-1, -1, 28, 28))
        real = scores > REAL_SCORE
        count = real.sum(dim=1)
        boxes, scores = boxes * real[..., None], scores * real
        labels, masks = labels * real, masks * real[..., None, None]
        return boxes, scores, labels, masks, count, _cluster_map(self.clusters(features))


def _write_metadata(path: Path, *, arch: str, task: str, preprocess: PreprocessSpec, labels: str,
                    label_names: list[str], outputs: list[str]) -> None:
    proto = onnx.load(str(path))
    props = {
        "paca.arch": arch, "paca.task": task, "paca.preprocess": preprocess.to_json(), "paca.labels": labels,
        "paca.label_names": json.dumps(label_names), "paca.outputs": json.dumps(outputs),
        "paca.exporter_version": "test",
    }
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def export_tiny_segmenter(path: Path) -> Path:
    torch.manual_seed(1)
    model = TinySegmenter().eval()
    outputs = ["seg_logits", "clusters_stage1"]
    with torch.no_grad():
        torch.onnx.export(
            model, (torch.randn(2, 3, 96, 128),), str(path), dynamo=False, opset_version=18,
            input_names=["pixel_values"], output_names=outputs,
            dynamic_axes={"pixel_values": {0: "batch", 2: "height", 3: "width"},
                          "seg_logits": {0: "batch", 2: "h4", 3: "w4"}, "clusters_stage1": {0: "batch", 2: "h4",
                                                                                              3: "w4"}},
        )
    _write_metadata(path, arch="tiny_segmenter", task="segmentation", preprocess=SCENE_PREPROCESS,
                    labels="test_colours", label_names=SEG_LABELS, outputs=outputs)
    return path


def export_tiny_detector(path: Path) -> Path:
    torch.manual_seed(2)
    model = TinyDetector().eval()
    outputs = ["boxes", "scores", "labels", "mask_probs", "num_detections", "clusters_stage1"]
    batch_first = {name: {0: "batch"} for name in outputs}
    with torch.no_grad():
        torch.onnx.export(
            model, (torch.randn(2, 3, 96, 128),), str(path), dynamo=False, opset_version=18,
            input_names=["pixel_values"], output_names=outputs,
            dynamic_axes={**batch_first, "pixel_values": {0: "batch", 2: "height", 3: "width"},
                          "clusters_stage1": {0: "batch", 2: "h4", 3: "w4"}},
        )
    _write_metadata(path, arch="tiny_detector", task="detection", preprocess=SCENE_PREPROCESS,
                    labels="test_shapes", label_names=DET_LABELS, outputs=outputs)
    return path


def export_paca_classifier(path: Path) -> Path:
    """The tiny PaCa digit classifier with seeded random weights; the weights also go to `classifier.safetensors`
    beside the final artifact, so the torch backend can serve the very same model."""
    from safetensors.torch import save_file

    from export import export_onnx
    from models import build

    torch.manual_seed(0)
    model = build("tiny_digits_cls")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(path.with_name("classifier.safetensors")))
    return export_onnx("tiny_digits_cls", path, model=model)


def ensure_artifacts(folder: Path) -> Path:
    """The three fixture artifacts in `folder` (written once; a partial file never counts as done)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, make in (("classifier.onnx", export_paca_classifier), ("segmenter.onnx", export_tiny_segmenter),
                       ("detector.onnx", export_tiny_detector)):
        missing_weights = name == "classifier.onnx" and not (folder / "classifier.safetensors").exists()
        if not (folder / name).exists() or missing_weights:
            partial = folder / f"partial-{name}"
            make(partial)
            partial.rename(folder / name)
    return folder


def repository_dict(artifacts: Path, **overrides: dict) -> dict:
    """A model repository serving the three fixture models; `overrides` update a model's entry by name."""
    models = [
        {"name": CLASSIFIER, "artifact": str(artifacts / "classifier.onnx"), "max_batch_size": 8,
         "batching": {"max_queue_delay_ms": 20, "max_queue_size": 64, "queue_timeout_ms": 60000}},
        {"name": SEGMENTER, "artifact": str(artifacts / "segmenter.onnx"), "max_batch_size": 4, "instances": 2,
         "batching": {"max_queue_delay_ms": 20, "max_queue_size": 64, "queue_timeout_ms": 60000},
         "warmup": {"image_sizes": [[120, 160]]}},
        # One intra-op thread, as served by default: a batched image's answer is then bit-identical to alone.
        {"name": DETECTOR, "artifact": str(artifacts / "detector.onnx"), "max_batch_size": 4,
         "options": {"intra_op_threads": 1},
         "batching": {"max_queue_delay_ms": 20, "max_queue_size": 64, "queue_timeout_ms": 60000},
         "warmup": {"image_sizes": [[120, 160]]}},
    ]
    for model in models:
        model.update(overrides.get(model["name"], {}))
    return {"models": models}
