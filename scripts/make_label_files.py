"""Writes models/labels/imagenet1k.txt and coco80.txt from torchvision's bundled class lists (run once).

The text files are the data the project ships; this script only documents where they came from.
ImageNet: torchvision `_IMAGENET_CATEGORIES` (1000, index = class id). COCO-80: torchvision's 91-entry
COCO_V1 list without `__background__` and the ten "N/A" slots, which leaves the 80 names in ascending
category-id order — mmdet's label order (`CocoDataset` label i = the i-th sorted category id).
"""

from __future__ import annotations

from pathlib import Path

from torchvision.models._meta import _COCO_CATEGORIES, _IMAGENET_CATEGORIES

LABELS_DIR = Path(__file__).resolve().parents[1] / "models" / "labels"


def main() -> None:
    coco80 = [name for name in _COCO_CATEGORIES if name not in ("__background__", "N/A")]
    for filename, names, count in (("imagenet1k.txt", _IMAGENET_CATEGORIES, 1000), ("coco80.txt", coco80, 80)):
        if len(names) != count:
            raise SystemExit(f"{filename}: expected {count} names, torchvision gave {len(names)}")
        (LABELS_DIR / filename).write_text("\n".join(names) + "\n")
        print(f"wrote {LABELS_DIR / filename} ({len(names)} names)")


if __name__ == "__main__":
    main()
