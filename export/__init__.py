"""Export: ONNX with the `paca::PaCaAttention` custom op, TensorRT engines, Triton model repositories.

Import-light: torch is imported only when an export runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_onnx"]


def __getattr__(name: str) -> Any:
    if name == "export_onnx":
        from export.onnx_export import export_onnx

        return export_onnx
    raise AttributeError(name)
