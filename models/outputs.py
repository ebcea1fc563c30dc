"""Task wrappers: give every exported graph the input/output layout of cross-team contract 1.

Input `pixel_values`; outputs the task's main tensors, then `clusters_stage{i}` for each backbone
stage that has clusters (taken from the model's `forward_with_clusters`).
"""

from __future__ import annotations

import torch
from torch import nn


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
    """Detection, one image per run: (boxes, scores, labels, mask_probs, *cluster maps).

    The image size passed to `forward_raw` is the input's own (H, W): the service pads to the
    model's divisor before inference, and boxes are clipped to the unpadded size it reports.
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
