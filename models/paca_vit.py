"""PaCa-ViT backbone and classifier (Grainger et al., CVPR 2023, arXiv:2203.11987; github.com/iVMCL/PaCaViT).

Module names and registration order follow the official state_dict layout exactly, so official
checkpoints load with strict key matching and the reference key manifests apply unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.attention import PaCaAttentionCore
from models.config import PaCaConfig

LN_EPS = 1e-6


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over C at every pixel of a BCHW tensor (timm LayerNorm2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def tokens_to_map(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, N, C) → (B, C, H, W), row-major patches."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)


class Stem(nn.Module):
    """Two stride-2 3×3 convs (no activation between them) and LN2d: output stride 4."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(3, out_dim // 2, 3, 2, 1),
            nn.Conv2d(out_dim // 2, out_dim, 3, 2, 1),
        )
        self.norm = LayerNorm2d(out_dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class Transition(nn.Module):
    """Stride-2 3×3 conv + LN2d between stages."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, 3, 2, 1)
        self.norm = LayerNorm2d(out_dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class P2CConv2d(nn.Module):
    """Conv clustering: dw7 → GELU → 1×1 → GELU → 1×1 (C → M, no bias); logits (B, M, N)."""

    def __init__(self, dim: int, num_clusters: int) -> None:
        super().__init__()
        self.clustering = nn.Sequential(
            nn.Conv2d(dim, dim, 7, 1, 3, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, 1),
            nn.GELU(),
            nn.Conv2d(dim, num_clusters, 1, bias=False),
        )

    def forward(self, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.clustering(tokens_to_map(u, height, width)).flatten(2)


class P2CMlp(nn.Module):
    """MLP clustering: Linear(C, 4C) → GELU → Linear(4C, M); logits (B, M, N)."""

    def __init__(self, dim: int, num_clusters: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.clustering = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_clusters))

    def forward(self, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.clustering(u).transpose(1, 2)


class P2CLinear(nn.Module):
    """Linear clustering (defined officially, used by no released variant)."""

    def __init__(self, dim: int, num_clusters: int) -> None:
        super().__init__()
        self.clustering = nn.Linear(dim, num_clusters, bias=False)

    def forward(self, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.clustering(u).transpose(1, 2)


CLUSTERING_MODULES = {"conv": P2CConv2d, "mlp": P2CMlp, "linear": P2CLinear}


class PaCaLayer(nn.Module):
    """Patch-to-cluster attention: queries are patches, keys/values are M pooled cluster tokens."""

    def __init__(self, dim: int, num_heads: int, num_clusters: int, clustering: str,
                 owns_clustering: bool) -> None:
        super().__init__()
        self.num_clusters = num_clusters
        if num_clusters > 0:
            self.cluster_norm = nn.LayerNorm(dim, eps=LN_EPS)
            if owns_clustering:
                self.clustering = CLUSTERING_MODULES[clustering](dim, num_clusters)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.core = PaCaAttentionCore(num_heads, dim // num_heads)

    def forward(self, u: torch.Tensor, height: int, width: int,
                z: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.num_clusters > 0:
            if hasattr(self, "clustering"):
                z = self.clustering(u, height, width).softmax(dim=-1)  # softmax over the N patches
            if z is None:
                raise RuntimeError("a PaCa block without its own clustering module needs an assignment")
            tokens = self.cluster_norm(torch.matmul(z, u))  # (B, M, N) @ (B, N, C) → (B, M, C)
        else:
            tokens = u  # no clustering in this stage: ordinary patch-to-patch MHSA
        out = self.core(self.q(u), self.k(tokens), self.v(tokens))
        return self.proj(out), z


class DWConv(nn.Module):
    """Depthwise 3×3 conv on the token grid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.dwconv(tokens_to_map(x, height, width)).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """fc1 → (+ depthwise conv shortcut) → GELU → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        y = self.fc1(x)
        y = self.act(y + self.dwconv(y, height, width))
        return self.fc2(y)


class PaCaBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + mlp(LN(x)). Drop path is inactive at inference."""

    def __init__(self, dim: int, num_heads: int, num_clusters: int, clustering: str,
                 owns_clustering: bool, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1_before = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = PaCaLayer(dim, num_heads, num_clusters, clustering, owns_clustering)
        self.norm2_before = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, height: int, width: int,
                z: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, z = self.attn(self.norm1_before(x), height, width, z)
        x = x + a
        x = x + self.mlp(self.norm2_before(x), height, width)
        return x, z


# ---------------------------------------------------------------- ConvMixer clustering teacher


class Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


def convmixer_unit(dim: int) -> nn.Sequential:
    """Residual(dw7 → GELU → BN) → 1×1 → GELU → BN."""
    return nn.Sequential(
        Residual(nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), nn.GELU(), nn.BatchNorm2d(dim))),
        nn.Conv2d(dim, dim, 1),
        nn.GELU(),
        nn.BatchNorm2d(dim),
    )


class BlurConv2d(nn.Module):
    """Fixed [1,2,1]⊗[1,2,1]/16 depthwise blur (zero padding 1), then a stride-2 conv."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = (kernel[:, None] * kernel[None, :]) / 16.0
        self.register_buffer("blur_filter", kernel.expand(in_dim, 1, 3, 3).clone())
        self.conv = nn.Conv2d(in_dim, out_dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.blur_filter, stride=1, padding=1, groups=x.shape[1])
        return self.conv(x)


class ConvMixerTeacher(nn.Module):
    """Parallel CNN that computes every stage's cluster assignment and a feature added to the ViT."""

    def __init__(self, dims: tuple[int, ...], depths: tuple[int, ...], clusters: tuple[int, ...]) -> None:
        super().__init__()
        for i in range(4):
            setattr(self, f"block{i + 1}", nn.Sequential(*[convmixer_unit(dims[i]) for _ in range(depths[i])]))
            if i < 3:
                setattr(self, f"transition{i + 1}",
                        nn.Sequential(BlurConv2d(dims[i], dims[i + 1]), nn.GELU(), nn.BatchNorm2d(dims[i + 1])))
                setattr(self, f"lateral{i + 1}",
                        nn.Sequential(nn.Conv2d(dims[i + 1], dims[i], 1), nn.GELU(), nn.BatchNorm2d(dims[i])))
                setattr(self, f"fpn{i + 1}", convmixer_unit(dims[i]))
            setattr(self, f"to_clusters{i + 1}", nn.Conv2d(dims[i], clusters[i], 1))

    def forward(self, stem: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Returns (assignments z_i (B, M_i, N_i), features (B, N_i, C_i)) for the four stages."""
        outs = []
        t = stem
        for i in range(4):
            t = getattr(self, f"block{i + 1}")(t)
            outs.append(t)
            if i < 3:
                t = getattr(self, f"transition{i + 1}")(t)
        fused = [None, None, None, outs[3]]
        for i in (2, 1, 0):
            up = F.interpolate(fused[i + 1], size=outs[i].shape[-2:], mode="bilinear", align_corners=False)
            fused[i] = getattr(self, f"fpn{i + 1}")(outs[i] + getattr(self, f"lateral{i + 1}")(up))
        assignments = [
            getattr(self, f"to_clusters{i + 1}")(fused[i]).flatten(2).softmax(dim=-1) for i in range(4)
        ]
        features = [o.flatten(2).transpose(1, 2) for o in outs]
        return assignments, features


# ---------------------------------------------------------------------------------------- the network


class PaCaViT(nn.Module):
    """PaCa-ViT. With `num_classes > 0` a classifier; with 0 a backbone returning 4 BCHW features."""

    def __init__(self, config: PaCaConfig) -> None:
        super().__init__()
        self.config = config
        dims = config.embed_dims
        self.num_features = dims[-1]
        if config.teacher_depths is not None:
            self.paca_teacher = ConvMixerTeacher(dims, config.teacher_depths, config.clusters)
        self.patch_embed = Stem(dims[0])
        for i in range(4):
            blocks = [
                PaCaBlock(dims[i], config.num_heads[i], config.clusters[i], config.clustering,
                          config.owns_clustering(i, j), config.mlp_ratio)
                for j in range(config.depths[i])
            ]
            setattr(self, f"stage{i + 1}", nn.ModuleList(blocks))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dims[i], eps=LN_EPS))
            if i < 3:
                setattr(self, f"transition{i + 1}", Transition(dims[i], dims[i + 1]))
        if config.num_classes > 0:
            self.head = nn.Linear(dims[-1], config.num_classes)

    def _run_stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """Stage outputs after norm{i} (B, C_i, H_i, W_i) and each stage's assignment (B, M, H_i, W_i)."""
        x = self.patch_embed(x)
        teacher_z, teacher_feat = self.paca_teacher(x) if hasattr(self, "paca_teacher") else (None, None)
        features: list[torch.Tensor] = []
        assignments: list[torch.Tensor | None] = []
        for i in range(4):
            height, width = x.shape[-2:]
            tokens = x.flatten(2).transpose(1, 2)
            z = teacher_z[i] if teacher_z is not None else None
            for block in getattr(self, f"stage{i + 1}"):
                tokens, z = block(tokens, height, width, z)
            if teacher_feat is not None:
                tokens = tokens + teacher_feat[i]
            tokens = getattr(self, f"norm{i + 1}")(tokens)
            x = tokens_to_map(tokens, height, width)
            features.append(x)
            assignments.append(None if z is None else z.reshape(z.shape[0], z.shape[1], height, width))
            if i < 3:
                x = getattr(self, f"transition{i + 1}")(x)
        return features, assignments

    def forward_features_with_clusters(
        self, x: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """The four stage features and the per-stage assignments in one pass (for downstream heads)."""
        return self._run_stages(x)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stage-norm outputs as BCHW at strides 4, 8, 16, 32."""
        return self._run_stages(x)[0]

    def forward_head(self, last: torch.Tensor) -> torch.Tensor:
        """Mean over the stage-4 tokens → Linear."""
        return self.head(last.flatten(2).mean(dim=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        features = self.forward_features(x)
        return self.forward_head(features[-1]) if hasattr(self, "head") else features

    def forward_with_clusters(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor | list[torch.Tensor], list[torch.Tensor | None]]:
        """The normal output plus per-stage cluster assignments (B, M_i, H_i, W_i); None where M_i = 0.

        Each map sums to 1 over (H_i, W_i). In block-wise variants it is the stage's last block's z.
        """
        features, assignments = self._run_stages(x)
        out = self.forward_head(features[-1]) if hasattr(self, "head") else features
        return out, assignments
