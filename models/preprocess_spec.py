"""How an image becomes a model input, as data (no torch, no Pillow): one definition per arch.

Export writes it into the ONNX metadata and the service reads it back from there, so the two can
never disagree. The implementation that applies it lives in `models.preprocess`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)

ResizeMode = Literal["short_side_center_crop", "keep_ratio_within", "exact"]


@dataclass(frozen=True)
class PreprocessSpec:
    """Resize policy, normalisation and padding of one model's input.

    - "short_side_center_crop": resize the short side to `resize_short` (aspect kept), then center-crop
      `size` = (H, W). timm classification eval transform (crop_pct 0.9: 248 → 224).
    - "keep_ratio_within": scale s = min(size[0] / long side, size[1] / short side) with
      size = (long_max, short_max), new side = int(side·s + 0.5) (mmcv `rescale_size`).
    - "exact": resize to `size` = (H, W), aspect not kept.
    Pixels are RGB; normalisation is (x − mean) / std on the 0–255 scale. After normalising, the
    image is padded bottom/right with `pad_value` to a multiple of `pad_divisor`. `resize_backend` is the
    library that resizes, as the arch's official pipeline does: Pillow (antialiased; timm) or OpenCV
    (`cv2.resize`, no antialiasing; mmdet/mmseg via mmcv) — they differ by ±1 on many pixels.
    """

    resize_mode: ResizeMode
    size: tuple[int, int]
    resize_short: int | None = None
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bilinear"
    resize_backend: Literal["pillow", "opencv"] = "pillow"
    mean: tuple[float, float, float] = IMAGENET_MEAN_255
    std: tuple[float, float, float] = IMAGENET_STD_255
    pad_divisor: int = 1
    pad_value: float = 0.0
    channel_order: Literal["RGB"] = "RGB"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def fixed_input_size(self) -> tuple[int, int] | None:
        """(H, W) every preprocessed image has, or None when it depends on the image."""
        return self.size if self.resize_mode in ("short_side_center_crop", "exact") else None

    @property
    def max_input_hw(self) -> tuple[int, int]:
        """The largest (H, W) any image can preprocess to (either orientation for keep-ratio resizing)."""
        if self.fixed_input_size is not None:
            return self.fixed_input_size
        divisor = max(self.pad_divisor, 1)
        side = -(-max(self.size) // divisor) * divisor
        return side, side

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PreprocessSpec:
        data = json.loads(text)  # artifacts written before resize_backend existed resized with Pillow
        data["size"] = tuple(data["size"])
        data["mean"] = tuple(data["mean"])
        data["std"] = tuple(data["std"])
        return cls(**data)


IMAGENET_CLASSIFICATION = PreprocessSpec(
    resize_mode="short_side_center_crop", size=(224, 224), resize_short=248, interpolation="bicubic"
)
ADE20K_SEGMENTATION = PreprocessSpec(resize_mode="keep_ratio_within", size=(2048, 512), interpolation="bilinear",
                                     resize_backend="opencv")
COCO_DETECTION = PreprocessSpec(
    resize_mode="keep_ratio_within", size=(1333, 800), interpolation="bilinear", pad_divisor=32,
    resize_backend="opencv",
)
