"""Precision policy: strongly typed networks with the precision in the graph, TF32 off.

Weak typing (BuilderFlag.FP16 + OBEY_PRECISION_CONSTRAINTS) is deprecated from TensorRT 10.12 and removed
in 11, and with it nothing kept the cluster softmax or the reductions in fp32. So every engine is built
from a strongly typed network (TensorRT 10.x: the STRONGLY_TYPED creation flag; 11.x: always): an fp16
engine is built from an fp16 copy of the graph in which FP32_OPS (softmaxes over N patches, normalisations,
reductions, the z·u einsum, detection ops) stay fp32 behind explicit Casts, with fp32 inputs and outputs.
TF32 (on by default in TensorRT) is cleared: fp32 engines then match the fp32 graph, and the fp32 islands
of fp16 engines are real fp32.

`python -m export.tensorrt.precision IN.onnx OUT.onnx` writes the fp16 graph (for trtexec builds).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx

Precision = Literal["fp32", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16")
# Ops left in fp32 in reduced-precision graphs (the numerically wide parts of PaCa-ViT and the detectors).
FP32_OPS = ("Softmax", "LogSoftmax", "LayerNormalization", "GroupNormalization", "InstanceNormalization",
            "ReduceMean", "ReduceSum", "ReduceMax", "ReduceL2", "Einsum", "Resize", "TopK", "NonMaxSuppression",
            "RoiAlign", "Sigmoid", "Exp", "Log", "Div", "Pow", "Sqrt")


@dataclass(frozen=True)
class PrecisionPlan:
    """What the builder does for a precision."""

    precision: Precision
    needs_graph_casts: bool  # build from fp16_graph(model)
    cleared_flags: tuple[str, ...]  # names in trt.BuilderFlag to clear
    strongly_typed: bool = True


def plan_precision(precision: str) -> PrecisionPlan:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return PrecisionPlan(precision, needs_graph_casts=precision == "fp16", cleared_flags=("TF32",))  # type: ignore[arg-type]


def fp16_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """An fp16 copy of the graph with fp32 inputs/outputs and FP32_OPS kept in fp32 (ONNX Runtime's converter)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the converter edits its argument in place
    return convert_float_to_float16(copy, keep_io_types=True,
                                    op_block_list=sorted(set(FP32_OPS) | set(DEFAULT_OP_BLOCK_LIST)),
                                    disable_shape_infer=True)


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write `model`; weights go to `<name>.data` beside it when the file would pass protobuf's 2 GB limit."""
    path = Path(path)
    large = model.ByteSize() > 1_800_000_000
    onnx.save_model(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=path.name + ".data" if large else None)
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m export.tensorrt.precision IN.onnx OUT_FP16.onnx", file=sys.stderr)
        return 2
    save_model(fp16_graph(onnx.load(argv[0])), argv[1])
    print(argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
