"""The artifact contract: the `paca.*` self-description every served artifact carries, written and read here only.

Export writes it into the ONNX file's metadata_props; the service reads it back from whatever backend
serves the model (ONNX Runtime session, the source ONNX of a TensorRT engine, a remote Triton model's
config `parameters`, or the registry for the torch backend). Keys:

| key | value |
|---|---|
| paca.arch | registered arch name |
| paca.task | classification, detection or segmentation (`models.tasks`) |
| paca.preprocess | PreprocessSpec JSON (resize, normalisation, padding) |
| paca.labels | label-set name |
| paca.label_names | JSON list of class names, index = class id |
| paca.outputs | JSON list of output names, in order |
| paca.weights | where the weights came from: `<checkpoint file> sha256:<hex>`, or `random` |
| paca.description | what the model is, for people (the arch's description; the repository may override it) |
| paca.exporter_version | contract version of the writer |

Torch-free; `onnx` is imported only by the functions that touch ONNX files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from models.preprocess_spec import PreprocessSpec
from models.tasks import TaskSpec, cluster_stage, task_spec

if TYPE_CHECKING:
    import onnx

EXPORTER_VERSION = "1.2.0"  # 1.2: detection batches (per-image padded outputs + num_detections)
KEY_PREFIX = "paca."
RANDOM_WEIGHTS = "random"
UNKNOWN = "unknown"
_REQUIRED = ("paca.arch", "paca.task", "paca.preprocess", "paca.labels", "paca.label_names", "paca.outputs")


@dataclass(frozen=True)
class ArtifactMetadata:
    """What an artifact says it is. `outputs` are the artifact's outputs in order (main, then cluster maps)."""

    arch: str
    task: str
    preprocess: PreprocessSpec
    labels: str
    label_names: tuple[str, ...]
    outputs: tuple[str, ...]
    weights: str = UNKNOWN
    exporter_version: str = EXPORTER_VERSION
    description: str = ""

    # ----------------------------------------------------------------------------------------- facts
    @property
    def task_spec(self) -> TaskSpec:
        return task_spec(self.task)

    @property
    def main_outputs(self) -> tuple[str, ...]:
        return self.task_spec.main_outputs

    @property
    def cluster_outputs(self) -> tuple[str, ...]:
        return tuple(name for name in self.outputs if cluster_stage(name) is not None)

    @property
    def random_weights(self) -> bool:
        return self.weights == RANDOM_WEIGHTS

    @property
    def warning(self) -> str | None:
        """What a user must know before trusting an answer, or None."""
        if self.random_weights:
            return (f"model of arch {self.arch} has random (untrained) weights: its answers are meaningless; "
                    "export it with --checkpoint")
        return None

    def label(self, index: int) -> str:
        return self.label_names[index] if 0 <= index < len(self.label_names) else str(index)

    # ---------------------------------------------------------------------------------------- to/from
    def to_props(self) -> dict[str, str]:
        return {
            "paca.arch": self.arch,
            "paca.task": self.task,
            "paca.preprocess": self.preprocess.to_json(),
            "paca.labels": self.labels,
            "paca.label_names": json.dumps(list(self.label_names)),
            "paca.outputs": json.dumps(list(self.outputs)),
            "paca.weights": self.weights,
            "paca.exporter_version": self.exporter_version,
            "paca.description": self.description,
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], *, lenient: bool = False, task: str | None = None,
                   available_outputs: Sequence[str] | None = None) -> ArtifactMetadata:
        """Parse the `paca.*` keys.

        Strict (an artifact `paca export` wrote): every key of the contract must be there. Lenient, for
        partial sources (a remote model, a hand-made artifact): only the preprocessing and the task (from
        `task`, which overrides the file's) are required; the rest defaults. `available_outputs` (what the
        backend really has) filters the declared outputs and must contain the task's main outputs.
        """
        required = ("paca.preprocess",) if task else ("paca.task", "paca.preprocess")
        missing = [key for key in (required if lenient else _REQUIRED) if key not in props]
        if missing:
            raise ValueError(f"not a PaCa artifact: its metadata lacks {', '.join(missing)}")
        chosen_task = task or props["paca.task"]
        spec = task_spec(chosen_task)
        declared = tuple(json.loads(props["paca.outputs"])) if "paca.outputs" in props else None
        if available_outputs is not None:
            absent = [name for name in spec.main_outputs if name not in available_outputs]
            if absent:
                raise ValueError(f"a {chosen_task} model must have outputs {spec.main_outputs}; missing {absent}")
            outputs = tuple(n for n in declared if n in available_outputs) if declared else tuple(available_outputs)
        elif declared is not None:
            outputs = declared
        else:
            raise ValueError("artifact metadata lacks paca.outputs and the backend's outputs are unknown")
        return cls(
            arch=props.get("paca.arch", UNKNOWN),
            task=chosen_task,
            preprocess=PreprocessSpec.from_json(props["paca.preprocess"]),
            labels=props.get("paca.labels", ""),
            label_names=tuple(json.loads(props.get("paca.label_names", "[]"))),
            outputs=outputs,
            weights=props.get("paca.weights", UNKNOWN),
            exporter_version=props.get("paca.exporter_version", UNKNOWN),
            description=props.get("paca.description", ""),
        )

    @classmethod
    def for_arch(cls, arch: str, outputs: Sequence[str], *, weights: str = UNKNOWN,
                 exporter_version: str = EXPORTER_VERSION) -> ArtifactMetadata:
        """The description of a registered arch, for sources that carry none (torch backend, bare engines)."""
        from models.registry import get_arch

        spec = get_arch(arch)
        return cls(arch=arch, task=spec.task, preprocess=spec.preprocess, labels=spec.labels,
                   label_names=label_names_for(spec.labels), outputs=tuple(outputs), weights=weights,
                   exporter_version=exporter_version, description=spec.description)


def describe_weights(checkpoint: str | Path | None) -> str:
    """`paca.weights` for a checkpoint file (name + sha256), or `random` without one."""
    if checkpoint is None:
        return RANDOM_WEIGHTS
    path = Path(checkpoint)
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    return f"{path.name} sha256:{digest}"


def label_names_for(label_set: str, count: int | None = None) -> tuple[str, ...]:
    """Class names of a label set from `models.labels`; checked against the model's class count."""
    from models.labels import load_labels

    names = tuple(load_labels(label_set))
    if count is not None and len(names) != count:
        raise ValueError(f"label set {label_set!r} has {len(names)} names but the model has {count} classes")
    return names


# ----------------------------------------------------------------------------------------------- ONNX
def write_metadata(model: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Set (replacing) the given metadata_props."""
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(model: onnx.ModelProto) -> ArtifactMetadata:
    """The strict contract of a loaded ONNX model."""
    return ArtifactMetadata.from_props({p.key: p.value for p in model.metadata_props})


def onnx_props(path: str | Path) -> dict[str, str]:
    """metadata_props of an ONNX file, read without loading its weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def main_outputs(task: str) -> Sequence[str]:
    """The task's main outputs, in order."""
    return task_spec(task).main_outputs
