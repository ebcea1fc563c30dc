"""What the KServe v2 / Triton model endpoints say about a served model: metadata, configuration, index.

The configuration comes from the one renderer `paca export-triton` uses too (`export.triton_config`).
"""

from __future__ import annotations

from export.triton_config import BatchingPolicy, InstanceGroup, TensorConfig, model_config
from service.model_runtime import ModelManager, ServedModel

SERVER_NAME = "paca-serve"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "statistics", "model_repository"]


def model_metadata(model: ServedModel) -> dict[str, object]:
    batch_dim = -1 if model.batchable else 1
    inputs = [{"name": i.name, "datatype": i.datatype, "shape": [batch_dim, *i.shape[1:]]} for i in model.inputs()]
    outputs = [{"name": o.name, "datatype": o.datatype,
                "shape": [-1, *o.shape[1:]] if model.batchable else list(o.shape)} for o in model.outputs()]
    metadata: dict[str, object] = {"name": model.name, "versions": [model.config.version], "platform": model.platform,
                                   "inputs": inputs, "outputs": outputs}
    if model.info is not None and model.info.description:
        metadata["description"] = model.info.description
    if model.info is not None and model.info.warning:
        metadata["warning"] = model.info.warning
    return metadata


def served_model_config(model: ServedModel) -> dict[str, object]:
    """Triton's ModelConfig JSON for a served model (max_batch_size 0 would mean: the model does not batch)."""
    assert model.info is not None
    batching = model.config.batching
    policy = BatchingPolicy(
        max_batch_size=model.max_batch_size if model.batchable else 0,
        max_queue_delay_us=int(batching.max_queue_delay_ms * 1000),
        queue_timeout_us=int(batching.queue_timeout_ms * 1000),
        max_queue_size=batching.max_queue_size,
        allow_timeout_override=batching.allow_timeout_override,
    )
    return model_config(
        model.name, model.platform, model.info,
        [TensorConfig(t.name, t.datatype, t.shape) for t in model.inputs()],
        [TensorConfig(t.name, t.datatype, t.shape) for t in model.outputs()],
        policy, [InstanceGroup(model.instance_kind, model.config.instances)], backend=model.backend_name,
    )


def repository_index(manager: ModelManager) -> list[dict[str, str]]:
    return [{"name": m.name, "version": m.config.version, "state": "READY" if m.ready else "UNAVAILABLE",
             "reason": "" if m.ready else (m.error or "loading")} for m in manager.models.values()]
