"""`paca train-demo` and `paca demo ensure|eval`: train, export and measure the bundled demo models.

Nothing heavy at import: torch and the trainers are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

DEMO_ARCHS = ("demo_digits_cls", "demo_digits_seg", "demo_digits_det")
DEFAULT_ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "demo"

demo_app = typer.Typer(help="The bundled demo models (MNIST digits).", no_args_is_help=True)

ArchOption = Annotated[
    list[str] | None, typer.Option("--arch", help="Demo arch(s) to act on (repeatable); default: all three.")
]


def register(app: typer.Typer) -> None:
    app.command("train-demo")(train_demo)
    app.add_typer(demo_app, name="demo")


def _chosen(arches: list[str] | None) -> list[str]:
    chosen = arches or list(DEMO_ARCHS)
    unknown = sorted(set(chosen) - set(DEMO_ARCHS))
    if unknown:
        raise typer.BadParameter(f"unknown demo arch(s) {', '.join(unknown)}; choose from {', '.join(DEMO_ARCHS)}")
    return chosen


def train_demo(
    arch: ArchOption = None,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and data order.")] = 0,
    output_dir: Annotated[
        Path | None, typer.Option(help="Where to write <arch>.safetensors; default: models/demo/weights/.")
    ] = None,
) -> None:
    """Train the demo models from scratch on CPU (seeded, reproducible) and save their weights."""
    from demo.train import train_and_save

    seconds = train_and_save(_chosen(arch), seed=seed, output_dir=output_dir)
    for name, took in seconds.items():
        typer.echo(f"{name}: trained in {took / 60:.1f} min")


@demo_app.command("ensure")
def ensure(
    artifacts_dir: Annotated[Path, typer.Option(help="Where the served ONNX artifacts go.")] = DEFAULT_ARTIFACTS,
    seed: Annotated[int, typer.Option(help="Seed used if weights must be trained.")] = 0,
) -> None:
    """Make sure every demo model has weights (train if missing) and a current ONNX artifact (export if missing,
    older than its weights, or written by another exporter version)."""
    from models.demo.archs import SERVED_NAMES, weights_path

    for name in DEMO_ARCHS:
        artifact = artifacts_dir / f"{SERVED_NAMES[name]}.onnx"
        if weights_path(name).exists() and artifact_is_current(artifact, weights_path(name)):
            typer.echo(f"{name}: {artifact} present")
            continue
        if artifact.exists():
            typer.echo(f"{name}: {artifact} is out of date (older than its weights or another exporter version)")
        try:
            _ensure_one(name, artifact, seed)
        except ImportError as exc:
            typer.secho(f"{name}: skipped, its model code is not available here ({exc})", fg="yellow", err=True)


def artifact_is_current(artifact: Path, weights: Path) -> bool:
    """Whether `artifact` can be served as is: present, not older than `weights`, and written by this exporter
    version (`paca.exporter_version`); an older contract may not fit the service (e.g. a one-image detector)."""
    if not artifact.exists() or artifact.stat().st_mtime < weights.stat().st_mtime:
        return False
    from export.metadata import EXPORTER_VERSION, onnx_props

    return onnx_props(artifact).get("paca.exporter_version") == EXPORTER_VERSION


def _ensure_one(name: str, artifact: Path, seed: int) -> None:
    from models.demo.archs import weights_path

    if not weights_path(name).exists():
        from demo.train import train_and_save

        typer.echo(f"{name}: no weights at {weights_path(name)}; training (seed {seed})")
        train_and_save([name], seed=seed)
    from export import export_onnx

    typer.echo(f"{name}: exporting {artifact}")
    partial = artifact.with_name(f"partial-{artifact.name}")  # a failed export never leaves a half file behind
    export_onnx(name, partial, checkpoint=weights_path(name))
    partial.replace(artifact)


@demo_app.command("eval")
def evaluate(
    arch: ArchOption = None,
    scenes: Annotated[int, typer.Option(help="Held-out scenes for detection/segmentation.")] = 200,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON.")] = None,
) -> None:
    """Held-out accuracy of the trained demo models (PyTorch, CPU): top-1, box/mask mAP, mIoU."""
    from rich.console import Console
    from rich.table import Table

    from demo.evaluate import evaluate_offline

    figures = evaluate_offline(_chosen(arch), scene_count=scenes)
    table = Table("arch", "metric", "value")
    for name, metrics in figures.items():
        for metric, value in metrics.items():
            table.add_row(name, metric, f"{value:.0f}" if metric == "images" else f"{value:.2f}")
    Console().print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
