"""The ONNX artifact's self-description (cross-team contract 1): what the service reads back.

Keys: paca.arch, paca.task, paca.preprocess (PreprocessSpec JSON), paca.labels, paca.label_names,
paca.outputs, paca.exporter_version. Torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from models.preprocess_spec import PreprocessSpec

EXPORTER_VERSION = "1.0.0"
KEY_PREFIX = "paca."


@dataclass(frozen=True)
class ArtifactMetadata:
    arch: str
    task: str
    preprocess: PreprocessSpec
    labels: str
    label_names: tuple[str, ...]
    outputs: tuple[str, ...]
    exporter_version: str = EXPORTER_VERSION

    def to_props(self) -> dict[str, str]:
        return {
            "paca.arch": self.arch,
            "paca.task": self.task,
            "paca.preprocess": self.preprocess.to_json(),
            "paca.labels": self.labels,
            "paca.label_names": json.dumps(list(self.label_names)),
            "paca.outputs": json.dumps(list(self.outputs)),
            "paca.exporter_version": self.exporter_version,
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> ArtifactMetadata:
        missing = [k for k in ("paca.arch", "paca.task", "paca.preprocess", "paca.labels", "paca.label_names",
                               "paca.outputs") if k not in props]
        if missing:
            raise ValueError(f"not a PaCa artifact: metadata is missing {', '.join(missing)}")
        return cls(
            arch=props["paca.arch"],
            task=props["paca.task"],
            preprocess=PreprocessSpec.from_json(props["paca.preprocess"]),
            labels=props["paca.labels"],
            label_names=tuple(json.loads(props["paca.label_names"])),
            outputs=tuple(json.loads(props["paca.outputs"])),
            exporter_version=props.get("paca.exporter_version", "unknown"),
        )


def write_metadata(model: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Set (replacing) the given metadata_props."""
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(model: onnx.ModelProto) -> ArtifactMetadata:
    return ArtifactMetadata.from_props({p.key: p.value for p in model.metadata_props})


def label_names_for(label_set: str, count: int | None = None) -> tuple[str, ...]:
    """Class names of a label set from `models.labels`; checked against the model's class count."""
    names = tuple(_load_labels(label_set))
    if count is not None and len(names) != count:
        raise ValueError(f"label set {label_set!r} has {len(names)} names but the model has {count} classes")
    return names


def _load_labels(label_set: str) -> list[str]:
    try:
        from models.labels import load_labels
    except ImportError:  # the loader module is optional; the files are the contract
        path = Path(__file__).resolve().parents[1] / "models" / "labels" / f"{label_set}.txt"
        if not path.is_file():
            raise ValueError(f"unknown label set {label_set!r}: {path} does not exist") from None
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return load_labels(label_set)


def main_outputs(task: str) -> Sequence[str]:
    """The task outputs of contract 1, in order."""
    return {
        "classification": ("logits",),
        "segmentation": ("seg_logits",),
        "detection": ("boxes", "scores", "labels", "mask_probs"),
    }[task]
