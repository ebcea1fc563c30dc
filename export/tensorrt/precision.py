"""Precision policy: FP16 through builder flags on TensorRT 10, through graph casts on TensorRT 11.

TensorRT 11 networks are always strongly typed (serving-reference.md §C.1/§C.7): the ONNX graph's
own types decide, so an fp16 engine needs an fp16 graph. The cast pass keeps the numerically wide
parts (softmaxes over N patches, normalisations, the z·u reduction) in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import onnx

Precision = Literal["fp32", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16")
# Ops left in fp32 in reduced-precision graphs (spec §23 TensorRT risk points).
FP32_OPS = ("Softmax", "LayerNormalization", "ReduceMean", "ReduceSum", "Einsum", "Resize", "TopK",
            "NonMaxSuppression", "RoiAlign", "Sigmoid", "Exp", "Log", "Div")


@dataclass(frozen=True)
class PrecisionPlan:
    """What the builder does for a precision on a given TensorRT major version."""

    precision: Precision
    builder_flags: tuple[str, ...]  # names in trt.BuilderFlag
    strongly_typed: bool
    needs_graph_casts: bool


def plan_precision(precision: str, trt_major: int) -> PrecisionPlan:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if trt_major < 10:
        raise ValueError(f"TensorRT {trt_major} is not supported (need 10 or newer: IPluginV3, QDP)")
    if precision == "fp32":
        return PrecisionPlan("fp32", (), trt_major >= 11, False)
    if trt_major == 10:
        return PrecisionPlan("fp16", ("FP16", "OBEY_PRECISION_CONSTRAINTS"), False, False)
    return PrecisionPlan("fp16", (), True, True)


def fp16_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """An fp16 copy of the graph with fp32 inputs/outputs and FP32_OPS kept in fp32 (ONNX Runtime's converter)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the converter edits its argument in place
    return convert_float_to_float16(copy, keep_io_types=True, op_block_list=list(FP32_OPS),
                                    disable_shape_infer=True)
