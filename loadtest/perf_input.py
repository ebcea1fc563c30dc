"""Write a perf_analyzer --input-data JSON of real images, preprocessed exactly as the served arch expects.

perf_analyzer's default random input is raw random bytes, which decode to NaN/inf floats that the server
rightly rejects (400); zeros are accepted but are not an image. This turns real files into the model's FP32
input tensors (models.preprocess, the same code the server runs):

    .venv/bin/python loadtest/perf_input.py --arch demo_digits_cls --out /tmp/digits.json loadtest/images/digit_*.png
    .venv-tools/bin/python loadtest/perf_analyzer.py -m demo-digits-classifier --input-data /tmp/digits.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from models.preprocess import preprocess_image
from models.registry import get_arch


def write_input_data(arch: str, images: list[Path], out: Path, input_name: str = "pixel_values") -> Path:
    """perf_analyzer JSON: one entry per image, {"content": flat values, "shape": [3, H, W]} (batch dim excluded)."""
    spec = get_arch(arch).preprocess
    entries = []
    for path in images:
        with Image.open(path) as image:
            tensor, _ = preprocess_image(image.convert("RGB"), spec)
        entries.append({input_name: {"content": tensor.ravel().tolist(), "shape": list(tensor.shape)}})
    out.write_text(json.dumps({"data": entries}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, help="registered arch whose PreprocessSpec applies")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--input-name", default="pixel_values")
    parser.add_argument("images", type=Path, nargs="+")
    args = parser.parse_args()
    print(write_input_data(args.arch, args.images, args.out, args.input_name))


if __name__ == "__main__":
    main()
