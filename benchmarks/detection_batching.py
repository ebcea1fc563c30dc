"""Does batching same-size images cost the detector anything on CPU? The demo detector's ONNX artifact in
ONNX Runtime (CPU, 1 intra-op thread, as served by default) on held-out scenes (all preprocess to 128×128),
run in batches of 1, 2 and 4: per-image time side by side, in interleaved rounds (every round runs every
batch size over the same images, so load phases of a shared machine hit all alike), medians over rounds.
Also checks that every image's outputs in a batch are bit-identical to its outputs alone.

Run: python benchmarks/detection_batching.py [--batch 1 2 4 --rounds 15 --images 8 --json out.json]
     python benchmarks/detection_batching.py --smoke   (seconds: checks that it produces its figures)
The artifact defaults to the one `paca demo ensure` writes; it is exported here when missing or out of date.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARCH = "demo_digits_det"


def ensure_artifact(path: Path) -> Path:
    """The demo detector's artifact, exported from the committed weights when missing or out of date."""
    from demo.artifacts import artifact_is_current
    from models.demo.archs import weights_path

    if not artifact_is_current(path, weights_path(ARCH)):
        from export import export_onnx

        print(f"exporting {path} from {weights_path(ARCH)} (a minute or two)", flush=True)
        partial = path.with_name(f"partial-{path.name}")
        export_onnx(ARCH, partial, checkpoint=weights_path(ARCH))
        partial.replace(path)
    return path


def scene_pixels(count: int, spec) -> np.ndarray:
    """(count, 3, H, W) float32: held-out scenes through the service's preprocessing (one padded size)."""
    from PIL import Image

    from demo import evaluate
    from models.preprocess import preprocess_image

    arrays = [preprocess_image(Image.fromarray(scene.image), spec)[0] for scene in evaluate.heldout_scenes(count)]
    if len({a.shape for a in arrays}) != 1:
        raise SystemExit(f"scenes preprocess to different sizes {sorted({a.shape for a in arrays})}")
    return np.stack(arrays)


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_in_batches(sess, pixels: np.ndarray, batch: int) -> list[list[np.ndarray]]:
    """Every image's outputs (batch axis kept), the images run `batch` at a time."""
    per_image: list[list[np.ndarray]] = []
    for start in range(0, len(pixels), batch):
        outputs = sess.run(None, {"pixel_values": pixels[start : start + batch]})
        per_image.extend([[o[i : i + 1] for o in outputs] for i in range(len(outputs[0]))])
    return per_image


def time_rounds(sess, pixels: np.ndarray, batches: list[int], rounds: int) -> dict[int, list[float]]:
    """Per-image milliseconds of every round for each batch size, batch sizes interleaved within a round."""
    per_image_ms: dict[int, list[float]] = {b: [] for b in batches}
    for batch in batches:  # warm-up: every shape once
        run_in_batches(sess, pixels, batch)
    for round_index in range(rounds):
        order = batches if round_index % 2 == 0 else list(reversed(batches))  # no fixed first/last position
        for batch in order:
            start = time.perf_counter()
            run_in_batches(sess, pixels, batch)
            per_image_ms[batch].append((time.perf_counter() - start) * 1000 / len(pixels))
    return per_image_ms


def identical_to_alone(sess, pixels: np.ndarray, batches: list[int]) -> dict[int, bool]:
    alone = run_in_batches(sess, pixels, 1)
    return {b: all(all(np.array_equal(x, y) for x, y in zip(one, other, strict=True))
                   for one, other in zip(alone, run_in_batches(sess, pixels, b), strict=True)) for b in batches}


def main() -> None:
    import onnxruntime as ort

    from demo.artifacts import DEFAULT_ARTIFACTS
    from export.metadata import onnx_props
    from models.demo.archs import SERVED_NAMES
    from models.preprocess_spec import PreprocessSpec

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACTS / f"{SERVED_NAMES[ARCH]}.onnx")
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--images", type=int, default=8, help="images per round (a multiple of every batch)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--smoke", action="store_true", help="2 rounds on 4 images: checks the script works")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.images = 2, 4
    batches = sorted(set(args.batch))
    images = math.lcm(*batches) * max(1, args.images // math.lcm(*batches))

    path = ensure_artifact(args.artifact)
    spec = PreprocessSpec.from_json(onnx_props(path)["paca.preprocess"])
    pixels = scene_pixels(images, spec)
    sess = session(path, args.threads)
    same = identical_to_alone(sess, pixels, batches)
    times = time_rounds(sess, pixels, batches, args.rounds)

    base = statistics.median(times[batches[0]])
    rows = []
    for batch in batches:
        median = statistics.median(times[batch])
        rows.append({"batch": batch, "per_image_ms": round(median, 2), "batch_run_ms": round(median * batch, 2),
                     "images_per_s": round(1000 / median, 1), "vs_batch_1": round(median / base, 3),
                     "identical_to_alone": same[batch]})
    print(f"demo detector {path.name}: {images} held-out scenes of {pixels.shape[2]}x{pixels.shape[3]}, "
          f"ONNX Runtime {ort.__version__} CPU, {args.threads} intra-op thread(s), {args.rounds} interleaved "
          f"rounds, medians")
    print("| batch | per image (ms) | batch run (ms) | images/s | per image vs batch 1 | outputs = alone |")
    print("|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['batch']} | {row['per_image_ms']:.2f} | {row['batch_run_ms']:.2f} | {row['images_per_s']:.1f} "
              f"| {row['vs_batch_1']:.3f} | {'bit-identical' if row['identical_to_alone'] else 'DIFFERENT'} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"artifact": str(path), "images": images, "threads": args.threads,
                                         "rounds": args.rounds, "onnxruntime": ort.__version__, "rows": rows},
                                        indent=2) + "\n")
    if not all(same.values()):
        raise SystemExit("batched outputs differ from the images run alone")


if __name__ == "__main__":
    main()
