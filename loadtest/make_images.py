"""Write the load-test images: held-out demo digits and multi-digit scenes, as real PNG/JPEG files.

The images are committed (a few KB each) so that locust needs no numpy/PIL and no data set at run time;
this script documents where they came from and remakes them:

    .venv/bin/python loadtest/make_images.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from demo.data import digit_images, scene

IMAGES = Path(__file__).resolve().parent / "images"
DIGITS = 10
SCENES = 6


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    digits, labels = digit_images("heldout", seed=7)
    for n in range(DIGITS):
        index = n * (len(digits) // DIGITS)  # spread over the split: several classes
        Image.fromarray(digits[index]).save(IMAGES / f"digit_{n:02d}_label{labels[index]}.png")
    for n in range(SCENES):
        hw = (128, 128) if n % 2 == 0 else (96, 160)  # square and non-square canvases
        image = Image.fromarray(scene("heldout", n, seed=7, hw=hw).image)
        if n % 3 == 2:
            image.save(IMAGES / f"scene_{n:02d}.jpg", quality=90)
        else:
            image.save(IMAGES / f"scene_{n:02d}.png")
    print(f"wrote {len(list(IMAGES.iterdir()))} images to {IMAGES}")


if __name__ == "__main__":
    main()
