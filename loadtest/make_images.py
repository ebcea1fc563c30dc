"""Write the sample images: held-out demo digits and multi-digit scenes, as real PNG/JPEG files, and their truth.

The images are committed (a few KB each) so that locust needs no numpy/PIL and no data set at run time,
and they are the samples the README and docs post. `truth.json` next to them records what each shows:
a digit image's label; a scene's digits with their boxes (x1, y1, x2, y2 pixel edges in the file's own
pixels) and their stroke pixels (a COCO RLE mask). `tests/demo/test_sample_answers.py` checks every
served demo model against it. This script documents where they came from and remakes them:

    .venv/bin/python loadtest/make_images.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from demo.data import digit_images, scene

IMAGES = Path(__file__).resolve().parent / "images"
TRUTH = IMAGES / "truth.json"
DIGITS = 10
SCENES = 6


def _rle(mask: np.ndarray) -> dict[str, object]:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    truth: dict[str, dict[str, object]] = {}
    digits, labels = digit_images("heldout", seed=7)
    for n in range(DIGITS):
        index = n * (len(digits) // DIGITS)  # spread over the split: several classes
        name = f"digit_{n:02d}_label{labels[index]}.png"
        Image.fromarray(digits[index]).save(IMAGES / name)
        truth[name] = {"task": "classification", "label": str(labels[index])}
    for n in range(SCENES):
        hw = (128, 128) if n % 2 == 0 else (96, 160)  # square and non-square canvases
        item = scene("heldout", n, seed=7, hw=hw)
        name = f"scene_{n:02d}.jpg" if n % 3 == 2 else f"scene_{n:02d}.png"
        Image.fromarray(item.image).save(IMAGES / name, **({"quality": 90} if name.endswith(".jpg") else {}))
        digits = [
            {"label": str(label), "box": [int(v) for v in box], "mask": _rle(mask)}
            for label, box, mask in zip(item.labels.tolist(), item.boxes.tolist(), item.masks, strict=True)
        ]
        truth[name] = {"task": "scene", "digits": sorted(digits, key=lambda d: d["box"][0])}
    TRUTH.write_text(json.dumps(truth, indent=2) + "\n")
    print(f"wrote {len(truth)} images and {TRUTH.name} to {IMAGES}")


if __name__ == "__main__":
    main()
