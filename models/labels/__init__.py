"""Class-name lists as data: `models/labels/<name>.txt`, one name per line, line i = class index i.

Shipped sets: `imagenet1k` (torchvision's ImageNet names), `coco80` (mmdet label order, no background),
`ade20k150` (mmseg ADE20KDataset order); demo sets are added as further files.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

LABELS_DIR = Path(__file__).resolve().parent
_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


def available_label_sets() -> list[str]:
    return sorted(path.stem for path in LABELS_DIR.glob("*.txt"))


@cache
def _read(name: str) -> tuple[str, ...]:
    if not _NAME.match(name) or not (LABELS_DIR / f"{name}.txt").is_file():
        raise KeyError(f"unknown label set {name!r}; available: {', '.join(available_label_sets())}")
    lines = (LABELS_DIR / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    names = tuple(line.strip() for line in lines)
    if not names or "" in names:
        raise ValueError(f"label set {name!r} has empty lines; every line must name one class")
    return names


def load_labels(name: str) -> list[str]:
    """The class names of label set `name`, index = class id."""
    return list(_read(name))
