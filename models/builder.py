"""`build(arch, checkpoint)`: the one way to get a ready-to-run model, and `cluster_maps` to look inside it."""

from __future__ import annotations

import os

import torch
from torch import nn

from models.checkpoint import load_checkpoint
from models.registry import get_arch


def build(arch: str, checkpoint: str | os.PathLike | None = None, *, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The model of `arch` in eval mode, with `checkpoint` loaded strictly (see `models.checkpoint`).

    Without a checkpoint the weights are the random initialisation. Floating tensors of the
    checkpoint are cast to `dtype` (a float16 file loads into a float32 model).
    """
    spec = get_arch(arch)
    model = spec.factory().to(dtype=dtype)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, spec)
    return model.eval()


@torch.no_grad()
def cluster_maps(model: nn.Module, pixel_values: torch.Tensor) -> tuple[object, list[torch.Tensor | None]]:
    """(normal output, per-stage cluster assignments) of any PaCa model with `forward_with_clusters`.

    Stage i's map has shape (B, M_i, H_i, W_i): for every cluster, a distribution over the stage's
    patch grid (it sums to 1 over (H_i, W_i)). Stages without clustering give None. This is what the
    service's explanation endpoint shows.
    """
    forward_with_clusters = getattr(model, "forward_with_clusters", None)
    if forward_with_clusters is None:
        raise TypeError(f"{type(model).__name__} has no forward_with_clusters(); it is not a PaCa model")
    output, assignments = forward_with_clusters(pixel_values)
    return output, list(assignments)
