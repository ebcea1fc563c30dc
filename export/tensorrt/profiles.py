"""Optimisation profiles (min/opt/max input shapes) derived from an artifact's task and PreprocessSpec.

Pure Python: the same profiles feed the builder, the trtexec command line and the manifest.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from models.preprocess_spec import PreprocessSpec
from models.tasks import task_spec

INPUT_NAME = "pixel_values"
Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class ShapeProfile:
    """One optimisation profile for the `pixel_values` input (NCHW)."""

    min: Shape
    opt: Shape
    max: Shape
    input_name: str = INPUT_NAME

    def __post_init__(self) -> None:
        for axis in range(4):
            if not self.min[axis] <= self.opt[axis] <= self.max[axis]:
                raise ValueError(f"profile axis {axis}: need min <= opt <= max, got "
                                 f"{self.min[axis]}, {self.opt[axis]}, {self.max[axis]}")
        if self.min[0] < 1 or self.min[1] != 3:
            raise ValueError(f"profile min shape {self.min} must have batch >= 1 and 3 channels")

    def covers(self, shape: Shape) -> bool:
        return all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True))

    def to_json(self) -> dict[str, object]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ShapeProfile:
        return cls(tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]),  # type: ignore[arg-type]
                   str(data.get("input_name", INPUT_NAME)))


def _round_up(value: int, divisor: int) -> int:
    return -(-value // divisor) * divisor


def default_profile(task: str, preprocess: PreprocessSpec, *, max_batch: int = 32, opt_batch: int = 8,
                    min_hw: tuple[int, int] | None = None) -> ShapeProfile:
    """A profile covering everything the service can send for this preprocessing.

    Fixed-size inputs (classification): batch 1..max_batch at that size. Keep-ratio inputs: any
    orientation up to the long side (rounded up to the pad divisor), opt at the landscape size.
    A task that did not batch would get batch 1 (every task batches now; detection batches images of
    one padded size, though `build_engine` still refuses detection).
    """
    if not task_spec(task).batchable:
        max_batch = opt_batch = 1
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= opt_batch <= max_batch, got {opt_batch}, {max_batch}")
    fixed = preprocess.fixed_input_size
    if fixed is not None:
        height, width = fixed
        return ShapeProfile((1, 3, height, width), (opt_batch, 3, height, width), (max_batch, 3, height, width))
    divisor = max(preprocess.pad_divisor, 1)
    long_side, short_side = (_round_up(side, divisor) for side in preprocess.size)
    lo = min_hw or (max(divisor, 32), max(divisor, 32))
    return ShapeProfile(
        (1, 3, *lo),
        (opt_batch, 3, short_side, long_side),
        (max_batch, 3, long_side, long_side),
    )


_SHAPE_RE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")


def parse_hw(text: str) -> tuple[int, int]:
    """'512x640' → (512, 640) (height × width)."""
    match = _SHAPE_RE.match(text)
    if not match:
        raise ValueError(f"expected HEIGHTxWIDTH such as 512x640, got {text!r}")
    height, width = int(match.group(1)), int(match.group(2))
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {text!r}")
    return height, width


def trtexec_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)
