"""`paca export`, `paca build-engine`, `paca export-triton`.

Nothing heavy at import: torch, onnx and tensorrt are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EXPORT_STEPS = 5  # the report() calls of export_onnx


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


def _known_arch(arch: str) -> str:
    from models.registry import list_archs

    if arch not in list_archs():
        raise typer.BadParameter(f"unknown arch {arch!r}; run `paca models list` to see the known ones",
                                 param_hint="--arch")
    return arch


def export_command(
    arch: Annotated[str, typer.Option(help="Registered arch to export (see `paca models list`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .onnx file.")],
    checkpoint: Annotated[Path | None, typer.Option(
        help="Weights to load strictly (.pth/.safetensors); without it the random initialisation is exported.",
        exists=True, dir_okay=False)] = None,
    opset: Annotated[int, typer.Option(help="ONNX default-domain opset (>= 18).", min=18)] = 18,
    inline: Annotated[bool, typer.Option(
        help="Write a plugin-free graph: PaCaAttention nodes replaced by their body (no `paca` domain).")] = False,
) -> None:
    """Export ARCH to one self-contained ONNX file.

    The file has a dynamic batch axis (and dynamic height/width for segmentation and detection),
    PaCaAttention custom nodes (domain `paca`, TensorRT plugin attributes) with a model-local function
    body so ONNX Runtime runs it unchanged, the per-stage cluster maps as extra outputs, and metadata
    (arch, task, preprocessing, labels) so the service needs nothing but the file.
    """
    _known_arch(arch)
    from export.onnx_export import export_onnx
    from export.progress import step_progress

    with step_progress(f"export {arch}", EXPORT_STEPS) as report:
        path = export_onnx(arch, output, checkpoint=checkpoint, opset=opset, inline=inline, progress=report)
    size_mb = path.stat().st_size / 1e6
    typer.echo(f"{path} ({size_mb:.1f} MB)")
