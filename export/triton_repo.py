"""`write_triton_repository`: a Triton Inference Server model repository for one PaCa ONNX artifact.

Two variants of the same model: `<name>_onnx` (platform onnxruntime_onnx; runs the file unchanged,
PaCaAttention through its function body) and `<name>_trt` (platform tensorrt_plan; the engine from
`paca build-engine`, kernel embedded by the AOT plugin). Inputs/outputs, batching and warmup come
from the artifact itself; config.pbtxt is protobuf text format (Triton's ModelConfig).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx

from export.metadata import ArtifactMetadata, read_metadata
from export.tensorrt.manifest import read_manifest
from export.triton_config import (
    LABELS_FILE,
    BatchingPolicy,
    InstanceGroup,
    ModelFiles,
    TensorConfig,
    Warmup,
    model_config,
    to_pbtxt,
)

ONNX_TO_V2 = {
    onnx.TensorProto.FLOAT: "FP32", onnx.TensorProto.FLOAT16: "FP16", onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT32: "INT32", onnx.TensorProto.BOOL: "BOOL", onnx.TensorProto.UINT8: "UINT8",
}


@dataclass(frozen=True)
class RepositoryOptions:
    max_batch_size: int = 16
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 2000
    queue_timeout_us: int = 500_000
    max_queue_size: int = 128
    cpu_instances: int = 2
    gpu_instances: int = 1
    onnx_on_gpu: bool = False


def graph_tensors(model: onnx.ModelProto) -> tuple[list[TensorConfig], list[TensorConfig]]:
    """Inputs and outputs of the graph (full shapes, -1 for variable axes)."""

    def spec(value: onnx.ValueInfoProto) -> TensorConfig:
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type not in ONNX_TO_V2:
            raise ValueError(f"{value.name}: ONNX element type {tensor_type.elem_type} has no Triton type")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
        return TensorConfig(value.name, ONNX_TO_V2[tensor_type.elem_type], dims)

    initializers = {t.name for t in model.graph.initializer}
    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in model.graph.output]


def warmup_dims(metadata: ArtifactMetadata, input_dims: tuple[int, ...]) -> tuple[int, ...]:
    """Concrete input dims for warmup: the variable H/W set to the preprocessing's landscape size."""
    if all(d > 0 for d in input_dims):
        return input_dims
    spec = metadata.preprocess
    divisor = max(spec.pad_divisor, 1)
    long_side, short_side = (-(-side // divisor) * divisor for side in spec.size)
    return (*input_dims[:-2], short_side, long_side)


def variant_config(name: str, platform: str, metadata: ArtifactMetadata, inputs: list[TensorConfig],
                   outputs: list[TensorConfig], options: RepositoryOptions, *, gpu: bool,
                   files: ModelFiles | None = None) -> str:
    """The config.pbtxt text of one variant."""
    batched = metadata.task_spec.batchable
    max_batch = options.max_batch_size if batched else 0
    batching = BatchingPolicy(max_batch, options.max_queue_delay_us, options.queue_timeout_us,
                              options.max_queue_size, True, options.preferred_batch_sizes)
    count, kind = (options.gpu_instances, "KIND_GPU") if gpu else (options.cpu_instances, "KIND_CPU")
    dims = inputs[0].shape[1:] if batched else inputs[0].shape
    warmup = Warmup(tuple(sorted({1, *(b for b in options.preferred_batch_sizes if b <= max_batch)})),
                    warmup_dims(metadata, dims))
    parameters = {}
    if platform == "tensorrt_plan" and any(d < 0 for d in inputs[0].shape[-2:]):
        parameters["execution_context_allocation_strategy"] = "ON_PROFILE_CHANGE"
    config = model_config(name, platform, metadata, inputs, outputs, batching, [InstanceGroup(kind, count)],
                          warmup=warmup, files=files, parameters=parameters)
    return to_pbtxt(config)


README = """# Triton Inference Server repository for `{arch}` ({task})

Written by `paca export-triton`. Two variants of the same model:

| model | platform | file |
|---|---|---|
| `{name}_onnx` | `onnxruntime_onnx` | `1/model.onnx`, runs unchanged (PaCaAttention has a function body) |
| `{name}_trt` | `tensorrt_plan` | `1/model.plan` — {trt_status} |

Serve: `tritonserver --model-repository=$PWD` (ports 8000 HTTP, 8001 gRPC, 8002 metrics).

## How the PaCaAttention plugin is loaded

- **ONNX Runtime variant**: nothing to load. ONNX Runtime inlines the function body of the custom node.
- **TensorRT variant, engine built by `paca build-engine`** (Quickly Deployable Plugin, AOT): the OpenAI
  Triton kernel's PTX is embedded in the plan, so the C++ TensorRT backend runs it with **no plugin
  library and no Python**. The plan must be built with the same TensorRT version as the Triton container
  and on a GPU with the same compute capability (see `1/model.plan.json`); map several GPUs with
  `cc_model_filenames`.
- **TensorRT variant built from a C++ IPluginV3 library** instead (e.g. `trtexec --staticPlugins=...`):
  preload it, `LD_PRELOAD=/plugins/libpaca_plugins.so tritonserver ...`, or pass
  `--backend-config=tensorrt,plugins="/plugins/libpaca_plugins.so"`. Without it loading fails with
  `Cannot deserialize plugin since corresponding IPluginCreator not found in Plugin Registry`.
- A plan built with a JIT (Python) plugin implementation cannot run in Triton: use the AOT default.
- Without any plugin, TensorRT inlines the function body (the ONNX parser falls back to the local
  function), e.g. `paca export --inline` gives a plugin-free file.

## Inputs and outputs

`pixel_values` is already preprocessed (see `preprocess.json`: resize, normalisation, padding).
{batching}
Cluster maps `clusters_stage<i>` are extra outputs; request only the outputs you need.
"""


def write_triton_repository(onnx_path: str | os.PathLike, repository: str | os.PathLike, *,
                            model_name: str | None = None, engine_path: str | os.PathLike | None = None,
                            options: RepositoryOptions | None = None) -> Path:
    """Write (or update) the two variants of one model into `repository`; returns the repository path."""
    options = options or RepositoryOptions()
    onnx_path, repository = Path(onnx_path), Path(repository)
    model = onnx.load(str(onnx_path), load_external_data=False)
    metadata = read_metadata(model)
    name = model_name or metadata.arch.replace("-", "_")
    batched = metadata.task_spec.batchable
    inputs, outputs = graph_tensors(model)

    onnx_dir = repository / f"{name}_onnx"
    (onnx_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, onnx_dir / "1" / "model.onnx")
    external = onnx_path.with_name(onnx_path.name + ".data")
    if external.is_file():
        shutil.copyfile(external, onnx_dir / "1" / external.name)
    (onnx_dir / "config.pbtxt").write_text(variant_config(f"{name}_onnx", "onnxruntime_onnx", metadata, inputs,
                                                          outputs, options, gpu=options.onnx_on_gpu))

    trt_dir = repository / f"{name}_trt"
    (trt_dir / "1").mkdir(parents=True, exist_ok=True)
    files = None
    if engine_path is not None:
        manifest = read_manifest(engine_path)
        shutil.copyfile(engine_path, trt_dir / "1" / "model.plan")
        shutil.copyfile(Path(str(engine_path) + ".json"), trt_dir / "1" / "model.plan.json")
        files = ModelFiles("model.plan", {manifest.compute_capability: "model.plan"})
        trt_status = (f"TensorRT {manifest.tensorrt_version}, {manifest.gpu_name} "
                      f"(compute capability {manifest.compute_capability}), {manifest.precision}")
    else:
        trt_status = (f"not built yet: on the serving GPU run `paca build-engine {onnx_path.name} "
                      f"--output {name}_trt/1/model.plan --max-batch {options.max_batch_size if batched else 1}`")
    (trt_dir / "config.pbtxt").write_text(variant_config(f"{name}_trt", "tensorrt_plan", metadata, inputs, outputs,
                                                         options, gpu=True, files=files))

    for directory in (onnx_dir, trt_dir):
        (directory / LABELS_FILE).write_text("\n".join(metadata.label_names) + "\n", encoding="utf-8")
        (directory / "preprocess.json").write_text(json.dumps(json.loads(metadata.preprocess.to_json()), indent=2)
                                                   + "\n")
    batching = (f"Dynamic batching up to {options.max_batch_size} images per execution. Triton batches only "
                "requests whose inputs have the same shape, so images of one padded size share a run; PaCa "
                "features depend on the padding, so never pad images to a common size to batch them."
                if batched else "One image per request (max_batch_size 0, input batch 1).")
    if metadata.task == "detection":
        batching += (" Detection returns per image a fixed number of rows (`boxes`, `scores`, `labels`, "
                     "`mask_probs`, best first) and `num_detections`: how many of those rows are real; the "
                     "rest are zeros.")
    (repository / "README.md").write_text(README.format(arch=metadata.arch, task=metadata.task, name=name,
                                                        trt_status=trt_status, batching=batching))
    return repository
