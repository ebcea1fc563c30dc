"""The model-local FunctionProto that gives `paca::PaCaAttention` a body, plus attach/strip/inline.

With the body in the file ONNX Runtime runs the node unchanged; TensorRT uses the plugin when one
is registered under the node's `plugin_namespace` and otherwise inlines this body
(docs/export.md; the parser's dispatch order is in onnx/onnx-tensorrt `ModelImporter.cpp`).
"""

from __future__ import annotations

import onnx
import onnx.inliner
from onnx import TensorProto, helper

from export.op_spec import OP_DOMAIN, OP_NAME, OP_VERSION


def _attr_ref(name: str, ref: str, attr_type: int) -> onnx.AttributeProto:
    attr = onnx.AttributeProto()
    attr.name = name
    attr.ref_attr_name = ref
    attr.type = attr_type
    return attr


def _const_ints(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)],
                                                                           values))


def attention_function(default_opset: int) -> onnx.FunctionProto:
    """Body: split heads, softmax(q·scale kᵀ) over the keys, weighted sum of v, merge heads."""
    heads_scalar = helper.make_node("Constant", [], ["heads_scalar"])
    heads_scalar.attribute.append(_attr_ref("value_int", "num_heads", onnx.AttributeProto.INT))
    scale = helper.make_node("Constant", [], ["scale_value"])
    scale.attribute.append(_attr_ref("value_float", "scale", onnx.AttributeProto.FLOAT))
    nodes = [
        heads_scalar,
        scale,
        _const_ints("zero_axis", [0]),
        helper.make_node("Unsqueeze", ["heads_scalar", "zero_axis"], ["heads"]),
        _const_ints("keep_two", [0, 0]),
        _const_ints("rest", [-1]),
        helper.make_node("Concat", ["keep_two", "heads", "rest"], ["split_shape"], axis=0),
        _const_ints("merge_shape", [0, 0, -1]),
        helper.make_node("Reshape", ["q", "split_shape"], ["q_split"]),
        helper.make_node("Transpose", ["q_split"], ["q_heads"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["k", "split_shape"], ["k_split"]),
        helper.make_node("Transpose", ["k_split"], ["k_heads_t"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["v", "split_shape"], ["v_split"]),
        helper.make_node("Transpose", ["v_split"], ["v_heads"], perm=[0, 2, 1, 3]),
        helper.make_node("CastLike", ["scale_value", "q"], ["scale_typed"]),
        helper.make_node("Mul", ["q_heads", "scale_typed"], ["q_scaled"]),
        helper.make_node("MatMul", ["q_scaled", "k_heads_t"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["weights"], axis=-1),
        helper.make_node("MatMul", ["weights", "v_heads"], ["context"]),
        helper.make_node("Transpose", ["context"], ["context_tokens"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["context_tokens", "merge_shape"], ["out"]),
    ]
    return helper.make_function(
        OP_DOMAIN, OP_NAME, ["q", "k", "v"], ["out"], nodes,
        opset_imports=[helper.make_opsetid("", default_opset)],
        attributes=["num_heads", "scale"],
    )


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ValueError("model has no default-domain opset import")


def custom_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Every `paca::PaCaAttention` node of the main graph."""
    return [n for n in model.graph.node if n.domain == OP_DOMAIN and n.op_type == OP_NAME]


def attach_attention_function(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add (or replace) the function body and make sure the `paca` opset is imported."""
    strip_attention_function(model)
    model.functions.append(attention_function(default_opset(model)))
    if not any(entry.domain == OP_DOMAIN for entry in model.opset_import):
        model.opset_import.append(helper.make_opsetid(OP_DOMAIN, OP_VERSION))
    return model


def strip_attention_function(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove the body: a plugin-only file (TensorRT ≤ 10.6 otherwise prefers the function)."""
    keep = [f for f in model.functions if not (f.domain == OP_DOMAIN and f.name == OP_NAME)]
    del model.functions[:]
    model.functions.extend(keep)
    return model


def inline_attention(model: onnx.ModelProto) -> onnx.ModelProto:
    """A plugin-free graph: every custom node replaced by its body; the `paca` opset import dropped."""
    inlined = onnx.inliner.inline_local_functions(model)
    remaining = [entry for entry in inlined.opset_import if entry.domain != OP_DOMAIN]
    del inlined.opset_import[:]
    inlined.opset_import.extend(remaining)
    return inlined
