"""Latency per image of the served demo artifacts: ONNX Runtime on CPU with one thread, as `paca serve` runs them.

Figures for docs and `paca demo eval`, never asserted in tests (timings depend on the machine).
Each held-out image goes through the service's own preprocessing; only `session.run` is timed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from models.preprocess import preprocess_image
from models.registry import get_arch

WARMUP_RUNS = 3


def session(artifact: Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])


def latency_ms(arch: str, artifact: Path, images: list[np.ndarray], threads: int = 1) -> dict[str, float]:
    """Median and 90th-percentile milliseconds of one `session.run` per image (batch 1)."""
    runner = session(artifact, threads)
    input_name = runner.get_inputs()[0].name
    spec = get_arch(arch).preprocess
    feeds = [preprocess_image(Image.fromarray(image), spec)[0][None] for image in images]
    for feed in feeds[:WARMUP_RUNS]:
        runner.run(None, {input_name: feed})
    seconds = []
    for feed in feeds:
        started = time.perf_counter()
        runner.run(None, {input_name: feed})
        seconds.append(time.perf_counter() - started)
    milliseconds = 1000 * np.asarray(seconds)
    return {"latency_ms_p50": float(np.median(milliseconds)), "latency_ms_p90": float(np.percentile(milliseconds, 90))}
