"""What each task is, as data: the one place export, backends, the runtime and the API read task facts from.

A served artifact's outputs are its task's main outputs, in order, then one cluster map per clustering
backbone stage (`clusters_stage{i}`, 1-based). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Task = Literal["classification", "detection", "segmentation"]

CLUSTER_OUTPUT_PREFIX = "clusters_stage"


@dataclass(frozen=True)
class TaskSpec:
    """Facts of one task.

    `batchable`: images of one input size share a backend run. PaCa's features depend on the padding,
    so only images of one padded size share a run (the batcher groups by input shape); for detection that
    gives each image exactly its alone-results, since everything after the backbone is per image and the
    outputs are padded per image (`num_detections` says how many of the rows are real).
    `dense`: inputs keep the image's aspect ratio, so H and W vary per image (dynamic axes on export).
    `verb`: the REST endpoint (`/v1/models/{name}/{verb}`). `label_output`: the output whose last axis
    indexes the label set (Triton's `label_filename`).
    """

    name: Task
    main_outputs: tuple[str, ...]
    batchable: bool
    dense: bool
    verb: str
    label_output: str | None = None

    @property
    def example_batch(self) -> int:
        """Batch of the export example: 2 where the batch axis is dynamic (a batch of 1 gets specialised)."""
        return 2 if self.batchable else 1


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("classification", ("logits",), batchable=True, dense=False, verb="classify", label_output="logits"),
        TaskSpec("segmentation", ("seg_logits",), batchable=True, dense=True, verb="segment"),
        TaskSpec("detection", ("boxes", "scores", "labels", "mask_probs", "num_detections"), batchable=True,
                 dense=True, verb="detect"),
    )
}


def task_spec(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}") from None


def cluster_output(stage: int) -> str:
    """Output name of the cluster map of 1-based backbone `stage`."""
    return f"{CLUSTER_OUTPUT_PREFIX}{stage}"


def cluster_stage(output: str) -> int | None:
    """The 1-based stage of a cluster-map output name, or None for any other output."""
    if not output.startswith(CLUSTER_OUTPUT_PREFIX):
        return None
    suffix = output.removeprefix(CLUSTER_OUTPUT_PREFIX)
    return int(suffix) if suffix.isdigit() else None


def output_names(task: str, cluster_stages: tuple[int, ...]) -> tuple[str, ...]:
    """The artifact's outputs in order: the task's main outputs, then the cluster maps."""
    return (*task_spec(task).main_outputs, *(cluster_output(stage) for stage in cluster_stages))
