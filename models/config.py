"""PaCa-ViT variant configuration as plain data (no torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaCaConfig:
    """One PaCa-ViT variant. `clusters[i] == 0` means plain patch-to-patch MHSA in stage i."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int] = (2, 4, 8, 16)
    clusters: tuple[int, int, int, int] = (100, 100, 100, 0)
    clustering: str = "conv"  # "conv" (P2CConv2d), "mlp" (P2CMlp) or "linear" (P2CLinear)
    onsite_clustering: int = 0  # 0: stage-wise, 1: block-wise, k: blocks with j % k == 0
    teacher_depths: tuple[int, int, int, int] | None = None  # ConvMixer clustering teacher
    mlp_ratio: float = 4.0
    num_classes: int = 1000  # 0: downstream backbone returning the four stage features

    def owns_clustering(self, stage: int, block: int) -> bool:
        """Whether block `block` of 0-based `stage` computes its own cluster assignment."""
        if self.clusters[stage] == 0 or self.teacher_depths is not None:
            return False
        if self.onsite_clustering == 0:
            return block == 0
        return block % self.onsite_clustering == 0
