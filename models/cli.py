"""`paca models list|info|convert`: what archs exist and how to bring a checkpoint into our layout.

Nothing heavy at import: torch is imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

models_app = typer.Typer(help="PaCa-ViT architectures and checkpoints.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


def parameter_count(arch: str) -> int:
    """Parameters of `arch`, counted on the meta device (no memory, no init cost)."""
    import torch

    from models.registry import get_arch

    with torch.device("meta"):
        model = get_arch(arch).factory()
    return sum(p.numel() for p in model.parameters())


def _parameters_text(arch: str, scale: float = 1e6, fmt: str = "{:.2f}") -> str:
    """The parameter count for display; an arch whose code cannot be built here says why instead."""
    try:
        return fmt.format(parameter_count(arch) / scale)
    except (ImportError, RuntimeError) as exc:
        return f"n/a ({type(exc).__name__}: {exc})"


def _known_arch(arch: str) -> str:
    from models.registry import list_archs

    if arch not in list_archs():
        raise typer.BadParameter(f"unknown arch {arch!r}; run `paca models list` to see the known ones")
    return arch


@models_app.command("list")
def list_command(
    task: Annotated[str | None, typer.Option(help="only this task: classification, detection or segmentation")] = None,
) -> None:
    """List the archs with their task, size and official checkpoint file."""
    from rich.console import Console
    from rich.table import Table

    from models.registry import get_arch, list_archs

    if task is not None and task not in ("classification", "detection", "segmentation"):
        raise typer.BadParameter(f"unknown task {task!r}", param_hint="--task")
    table = Table("arch", "task", "params (M)")
    table.add_column("official checkpoint file", overflow="fold")
    for name in list_archs(task):  # type: ignore[arg-type]
        spec = get_arch(name)
        table.add_row(name, spec.task, _parameters_text(name), "\n".join(spec.checkpoint_files) or "—")
    Console(width=160).print(table)


@models_app.command("info")
def info_command(arch: Annotated[str, typer.Argument(help="arch name, see `paca models list`")]) -> None:
    """Show everything the project knows about one arch."""
    from rich.console import Console
    from rich.table import Table

    from models.registry import get_arch

    spec = get_arch(_known_arch(arch))
    table = Table(show_header=False)
    table.add_row("arch", spec.name)
    table.add_row("task", spec.task)
    table.add_row("description", spec.description or "—")
    table.add_row("parameters", _parameters_text(arch, 1, "{:,.0f}"))
    table.add_row("label set", spec.labels)
    table.add_row("preprocess", spec.preprocess.to_json())
    table.add_row("official checkpoint files", "\n".join(spec.checkpoint_files) or "—")
    table.add_row("ignored checkpoint prefixes", ", ".join(spec.ignored_checkpoint_prefixes) or "—")
    table.add_row("layout converter", "yes" if spec.convert_checkpoint else "no (keys used as they are)")
    Console(width=160).print(table)


@models_app.command("convert")
def convert_command(
    source: Annotated[Path, typer.Argument(help="checkpoint to read (.pth or .safetensors)")],
    target: Annotated[Path, typer.Argument(help="where to write the .safetensors file")],
    arch: Annotated[str, typer.Option(help="the arch the checkpoint belongs to")],
) -> None:
    """Rewrite a checkpoint (any supported wrapper/prefix/mm-layout) as safetensors in our key layout."""
    from models.checkpoint import CheckpointError, convert_checkpoint_file
    from models.registry import get_arch

    if target.suffix != ".safetensors":
        raise typer.BadParameter("the target must end in .safetensors", param_hint="TARGET")
    spec = get_arch(_known_arch(arch))
    try:
        count = convert_checkpoint_file(source, target, spec)
    except CheckpointError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {target} ({count} tensors, layout of {arch})")
