"""ONNX Runtime (CPU) on the same export two ways: PaCaAttention custom nodes with the function body vs
the `--inline` plugin-free graph. Prints latency side by side, the ratio, and the max output difference.

Run: python benchmarks/export_parity_speed.py [--arch pacavit_tiny_p2cconv_100_0 --batch 1 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def interleaved_median_ms(sessions: dict, feed, repeats: int) -> dict[str, float]:
    """Median ms per session, the sessions alternating run by run so machine load phases hit both alike."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for sess in sessions.values():
        sess.run(None, feed)
    for _ in range(repeats):
        for name, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, feed)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    import onnx

    from export.onnx_export import export_onnx
    from export.onnx_function import inline_attention
    from models.registry import get_arch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="pacavit_tiny_p2cconv_100_0")
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--hw", default=None, help="HxW for dense tasks (default: the preprocessing size)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    spec = get_arch(args.arch)
    height, width = (map(int, args.hw.split("x")) if args.hw else
                     (spec.preprocess.fixed_input_size or (512, 512)))
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(args.arch, Path(tmp) / "model.onnx")
        custom = onnx.load(str(path))
    inlined = inline_attention(custom)
    sessions = {"function": session(custom.SerializeToString(), args.threads),
                "inline": session(inlined.SerializeToString(), args.threads)}
    print(f"# {args.arch} {height}x{width}, ONNX Runtime CPU, {args.threads} threads, spinning off")
    print(f"{'batch':>5} {'function ms':>12} {'inline ms':>10} {'function/inline':>16} {'max |diff|':>11}")
    for batch in args.batch:
        feed = {"pixel_values": np.random.default_rng(batch).standard_normal((batch, 3, height, width),
                                                                              dtype=np.float32)}
        outputs = {name: s.run(None, feed)[0] for name, s in sessions.items()}
        times = interleaved_median_ms(sessions, feed, args.repeats)
        diff = float(np.abs(outputs["function"] - outputs["inline"]).max())
        print(f"{batch:>5} {times['function']:>12.1f} {times['inline']:>10.1f} "
              f"{times['function'] / times['inline']:>16.2f} {diff:>11.2e}")


if __name__ == "__main__":
    main()
