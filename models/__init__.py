"""PaCa-ViT models. Import-light: torch is imported only when a model is built."""

from __future__ import annotations

from typing import Any

from models.registry import ArchSpec, get_arch, list_archs

__all__ = ["ArchSpec", "build", "get_arch", "list_archs"]


def __getattr__(name: str) -> Any:
    if name == "build":
        from models.builder import build

        return build
    raise AttributeError(name)
