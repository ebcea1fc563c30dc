"""PaCa-ViT models. Import-light: torch is imported only when a model is built or run.

`models.build(arch, checkpoint=None)` gives an eval-mode model; `models.cluster_maps(model, x)`
gives its output together with the per-stage cluster assignments; `models.list_archs()` names
every arch (see docs/models.md).
"""

from __future__ import annotations

from typing import Any

from models.registry import ArchSpec, get_arch, list_archs

__all__ = ["ArchSpec", "build", "cluster_maps", "get_arch", "list_archs"]

_LAZY = {"build": "models.builder", "cluster_maps": "models.builder"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
