"""Triton's model configuration for a PaCa artifact, rendered once for every place that shows one.

`model_config` gives the configuration in Triton's JSON form (what `/v2/models/{m}/config` answers and
gRPC `ModelConfig` carries); `to_pbtxt` turns it into a `config.pbtxt` for `paca export-triton`, through
the protobuf messages of `export/triton_proto` (Triton's own field names and numbers). Durations are in
microseconds, as in Triton's schema. The artifact's `paca.*` self-description travels as `parameters`, so
a PaCa Serve remote backend pointed at Triton (or at another PaCa Serve) knows what the model is.
Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from export.metadata import KEY_PREFIX, ArtifactMetadata

LABELS_FILE = "labels.txt"


@dataclass(frozen=True)
class TensorConfig:
    """A model input or output: v2 datatype (FP32, INT64, ...) and full shape with -1 for variable axes."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class BatchingPolicy:
    """Triton's dynamic batcher and default queue policy; `max_batch_size` 0 = the model never batches."""

    max_batch_size: int
    max_queue_delay_us: int = 2000
    queue_timeout_us: int = 0
    max_queue_size: int = 128
    allow_timeout_override: bool = True
    preferred_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class InstanceGroup:
    kind: str  # KIND_CPU | KIND_GPU
    count: int = 1
    name: str | None = None


@dataclass(frozen=True)
class Warmup:
    """Warm-up requests Triton runs before a model is ready: one per batch size, random data."""

    batch_sizes: tuple[int, ...]
    input_dims: tuple[int, ...]  # without the batch axis; concrete sizes
    count: int = 2


@dataclass(frozen=True)
class ModelFiles:
    """TensorRT plans per compute capability (Triton picks the one matching the GPU)."""

    default: str = "model.plan"
    per_compute_capability: Mapping[str, str] = field(default_factory=dict)


def model_config(
    name: str,
    platform: str,
    metadata: ArtifactMetadata,
    inputs: Sequence[TensorConfig],
    outputs: Sequence[TensorConfig],
    batching: BatchingPolicy,
    instances: Sequence[InstanceGroup],
    *,
    backend: str | None = None,
    warmup: Warmup | None = None,
    files: ModelFiles | None = None,
    parameters: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """The configuration in Triton's JSON form (protobuf field names; dims without the batch axis when batched)."""
    batched = batching.max_batch_size > 0
    label_output = metadata.task_spec.label_output if metadata.label_names else None

    def dims(shape: Sequence[int]) -> list[int]:
        inner = list(shape[1:]) if batched else list(shape)
        return inner or [1]  # a batch-only tensor (B,) is [1] to the API, with an empty reshape for the model

    def reshape(shape: Sequence[int]) -> dict[str, object]:
        return {"reshape": {"shape": []}} if batched and len(shape) == 1 else {}

    config: dict[str, object] = {"name": name, "platform": platform}
    if backend:
        config["backend"] = backend
    config["max_batch_size"] = batching.max_batch_size
    if files is not None:
        config["default_model_filename"] = files.default
        if files.per_compute_capability:
            config["cc_model_filenames"] = dict(sorted(files.per_compute_capability.items()))
    config["input"] = [{"name": t.name, "data_type": triton_type(t.datatype), "format": "FORMAT_NCHW",
                        "dims": dims(t.shape), "optional": False, "is_shape_tensor": False} for t in inputs]
    config["output"] = [
        {"name": t.name, "data_type": triton_type(t.datatype), "dims": dims(t.shape), **reshape(t.shape),
         **({"label_filename": LABELS_FILE} if t.name == label_output else {})}
        for t in outputs
    ]
    config["instance_group"] = [
        {"name": group.name or f"{name}_{index}", "kind": group.kind, "count": group.count}
        for index, group in enumerate(instances)
    ]
    if batched:
        preferred = [b for b in batching.preferred_batch_sizes if b <= batching.max_batch_size]
        config["dynamic_batching"] = {
            **({"preferred_batch_size": preferred} if preferred else {}),
            "max_queue_delay_microseconds": batching.max_queue_delay_us,
            "preserve_ordering": False,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": batching.queue_timeout_us,
                "allow_timeout_override": batching.allow_timeout_override,
                "max_queue_size": batching.max_queue_size,
            },
        }
    params = {key: value for key, value in metadata.to_props().items() if key.startswith(KEY_PREFIX)}
    params.update(parameters or {})
    config["parameters"] = {key: {"string_value": value} for key, value in params.items()}
    if warmup is not None and inputs:
        first = inputs[0]
        config["model_warmup"] = [
            {"name": f"batch{batch}" if batched else "single_image", "batch_size": batch, "count": warmup.count,
             "inputs": {first.name: {"data_type": triton_type(first.datatype), "dims": list(warmup.input_dims),
                                     "random_data": True}}}
            for batch in warmup.batch_sizes
        ]
    return config


def triton_type(datatype: str) -> str:
    """KServe v2 datatype → Triton DataType enum name (BYTES is TYPE_STRING)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def metadata_from_parameters(parameters: Mapping[str, object]) -> dict[str, str]:
    """The `paca.*` keys back from a model configuration's `parameters` (JSON form)."""
    found = {}
    for key, value in parameters.items():
        if key.startswith(KEY_PREFIX) and isinstance(value, Mapping) and isinstance(value.get("string_value"), str):
            found[key] = value["string_value"]
    return found


def to_pbtxt(config: Mapping[str, object]) -> str:
    """config.pbtxt text: the JSON form parsed into Triton's ModelConfig message and printed as text format."""
    from google.protobuf import json_format, text_format

    from export.triton_proto import model_config_pb2

    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return text_format.MessageToString(message)
