"""The artifact's output layout as a module: what export traces and the torch backend runs, so the two agree.

Input `pixel_values`; outputs the task's main tensors (`models.tasks`), then `clusters_stage{i}` for each
backbone stage that has clusters (taken from the model's `forward_with_clusters`).
"""

from __future__ import annotations

import torch
from torch import nn

from models.registry import ArchSpec

# Spatial size of examples for dense tasks: non-square and not a power of two, so nothing specialises.
DENSE_EXAMPLE_HW = (96, 128)


class ClusterOutputsWrapper(nn.Module):
    """Classification / segmentation: (main output, *cluster maps of the stages listed)."""

    def __init__(self, model: nn.Module, cluster_stages: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.cluster_stages = cluster_stages

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        main, assignments = self.model.forward_with_clusters(pixel_values)
        return (main, *(assignments[i - 1] for i in self.cluster_stages))


class DetectionWrapper(nn.Module):
    """Detection: (boxes, scores, labels, mask_probs, num_detections, *cluster maps), all batch-first.

    A batch holds images of one padded size, so the image size passed to `forward_raw` is the input's
    own (H, W) for every image: the service pads to the model's divisor before inference, and clips
    boxes to each image after rescaling.
    """

    def __init__(self, model: nn.Module, cluster_stages: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.cluster_stages = cluster_stages

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image_hw = (pixel_values.shape[-2], pixel_values.shape[-1])
        if self.cluster_stages:
            raw, assignments = self.model.forward_raw_with_clusters(pixel_values, image_hw)
            return (*raw, *(assignments[i - 1] for i in self.cluster_stages))
        return tuple(self.model.forward_raw(pixel_values, image_hw))


def cluster_stages_of(model: nn.Module, example: torch.Tensor) -> tuple[int, ...]:
    """1-based stages whose assignment is not None (M_i > 0), found by one eager run."""
    with torch.no_grad():
        _, assignments = model.forward_with_clusters(example)
    return tuple(i + 1 for i, z in enumerate(assignments) if z is not None)


def detection_cluster_stages(model: nn.Module) -> tuple[int, ...]:
    """Clustering stages of a detector's backbone, read from its configuration (no forward run)."""
    config = getattr(getattr(model, "backbone", None), "config", None)
    if config is None or not hasattr(model, "forward_raw_with_clusters"):
        return ()
    return tuple(i + 1 for i, m in enumerate(config.clusters) if m > 0)


def example_input(spec: ArchSpec, *, seed: int = 0) -> torch.Tensor:
    """A random input of the arch's layout: its task's example batch, its fixed size or a dense example size."""
    height, width = spec.preprocess.fixed_input_size or DENSE_EXAMPLE_HW
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(spec.task_spec.example_batch, 3, height, width, generator=generator)


def wrap_outputs(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, tuple[int, ...]]:
    """`model` wrapped to the artifact's output layout, and its clustering stages.

    Detectors expose `forward_raw` (per-image padded detections); every other PaCa model
    `forward_with_clusters`.
    """
    if hasattr(model, "forward_raw"):
        stages = detection_cluster_stages(model)
        return DetectionWrapper(model, stages).eval(), stages
    stages = cluster_stages_of(model, example)
    return ClusterOutputsWrapper(model, stages).eval(), stages
