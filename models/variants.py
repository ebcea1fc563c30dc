"""The official PaCa-ViT classification variants by timm name (github.com/iVMCL/PaCaViT, `models/paca_vit.py`)."""

from __future__ import annotations

from models.config import PaCaConfig

TINY_DIMS = (96, 192, 320, 384)
SMALL_DIMS = TINY_DIMS
BASE_DIMS = (96, 192, 384, 512)

CLASSIFICATION_VARIANTS: dict[str, PaCaConfig] = {
    "pacavit_tiny_p2cconv_100_0": PaCaConfig(TINY_DIMS, (2, 2, 4, 2)),
    "pacavit_small_p2cconv_100_0": PaCaConfig(SMALL_DIMS, (3, 3, 10, 3)),
    "pacavit_base_p2cconv_100_0": PaCaConfig(BASE_DIMS, (3, 3, 18, 3)),
    "pacavit_small_p2cmlp_100_0": PaCaConfig(SMALL_DIMS, (3, 3, 10, 3), clustering="mlp"),
    # Ablations on the number and placement of clusters (PaCa-Small, conv clustering).
    "pacavit_small_p2cconv_2_0": PaCaConfig(SMALL_DIMS, (3, 3, 10, 3), clusters=(2, 2, 2, 0)),
    "pacavit_small_p2cconv_49_0": PaCaConfig(SMALL_DIMS, (3, 3, 10, 3), clusters=(49, 49, 49, 0)),
    "pacavit_small_p2cconv_49_100": PaCaConfig(SMALL_DIMS, (3, 3, 10, 3), clusters=(49, 64, 81, 100)),
    "pacavit_small_p2cconv_100_49": PaCaConfig(SMALL_DIMS, (3, 3, 10, 3), clusters=(100, 81, 64, 49)),
    "pacavit_small_p2cconv_100": PaCaConfig(SMALL_DIMS, (3, 3, 10, 3), clusters=(100, 100, 100, 100)),
    "pacavit_small_p2cconv_100_blockwise": PaCaConfig(
        SMALL_DIMS, (3, 3, 10, 3), clusters=(100, 100, 100, 100), onsite_clustering=1
    ),
    # External ConvMixer clustering teacher.
    "pacavit_convmixer_tiny_100": PaCaConfig(
        TINY_DIMS, (2, 2, 2, 2), clusters=(100, 100, 100, 100), teacher_depths=(2, 2, 2, 2)
    ),
    "pacavit_convmixer_small_100": PaCaConfig(
        SMALL_DIMS, (3, 3, 7, 3), clusters=(100, 100, 100, 100), teacher_depths=(2, 2, 2, 2)
    ),
    "pacavit_convmixer_base_100": PaCaConfig(
        BASE_DIMS, (3, 3, 16, 3), clusters=(100, 100, 100, 100), teacher_depths=(2, 2, 4, 2)
    ),
}


def downstream_clusters(config: PaCaConfig, per_stage: int) -> tuple[int, int, int, int]:
    """`downstream_cluster_num` of the official mmseg configs: every clustering stage gets `per_stage` clusters."""
    return tuple(per_stage if m > 0 else 0 for m in config.clusters)  # type: ignore[return-value]
