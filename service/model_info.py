"""What a served model is, read from its artifact's metadata (cross-team contract 1), never guessed."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from models.preprocess_spec import PreprocessSpec

TASKS = ("classification", "detection", "segmentation")
MAIN_OUTPUTS = {
    "classification": ("logits",),
    "segmentation": ("seg_logits",),
    "detection": ("boxes", "scores", "labels", "mask_probs"),
}
CLUSTER_OUTPUT_PREFIX = "clusters_stage"


@dataclass(frozen=True)
class ModelInfo:
    arch: str
    task: str
    preprocess: PreprocessSpec
    label_set: str
    label_names: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def main_outputs(self) -> tuple[str, ...]:
        return MAIN_OUTPUTS[self.task]

    @property
    def cluster_outputs(self) -> tuple[str, ...]:
        return tuple(name for name in self.outputs if name.startswith(CLUSTER_OUTPUT_PREFIX))

    def label(self, index: int) -> str:
        return self.label_names[index] if 0 <= index < len(self.label_names) else str(index)

    @classmethod
    def from_metadata(
        cls, props: Mapping[str, str], output_names: Sequence[str], *, task_override: str | None = None
    ) -> ModelInfo:
        """Parse contract-1 metadata; `output_names` are the backend's actual outputs (checked against it)."""
        required = ("paca.preprocess",) if task_override else ("paca.task", "paca.preprocess")
        missing = [key for key in required if key not in props]
        if missing:
            raise ValueError(f"artifact metadata lacks {', '.join(missing)} (not a PaCa export?)")
        task = task_override or props["paca.task"]
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        declared = tuple(json.loads(props["paca.outputs"])) if "paca.outputs" in props else tuple(output_names)
        absent = [name for name in MAIN_OUTPUTS[task] if name not in output_names]
        if absent:
            raise ValueError(f"a {task} model must have outputs {MAIN_OUTPUTS[task]}; missing {absent}")
        return cls(
            arch=props.get("paca.arch", "unknown"),
            task=task,
            preprocess=PreprocessSpec.from_json(props["paca.preprocess"]),
            label_set=props.get("paca.labels", ""),
            label_names=tuple(json.loads(props.get("paca.label_names", "[]"))),
            outputs=tuple(name for name in declared if name in output_names),
        )
