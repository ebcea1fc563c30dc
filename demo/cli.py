"""`paca train-demo` and `paca demo ensure|eval`: train, export and measure the bundled demo models.

Nothing heavy at import: torch and the trainers are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from demo.artifacts import DEFAULT_ARTIFACTS
from models.demo.archs import BACKBONE_PRETRAINING

DEMO_ARCHS = ("demo_digits_cls", "demo_digits_seg", "demo_digits_det")
# `paca train-demo` also trains the scene models' pre-trained body, first (it is not served).
TRAINED = (BACKBONE_PRETRAINING, *DEMO_ARCHS)
LATENCY_IMAGES = 50

demo_app = typer.Typer(help="The bundled demo models (MNIST digits).", no_args_is_help=True)

ArchOption = Annotated[
    list[str] | None, typer.Option("--arch", help="Demo arch(s) to act on (repeatable); default: all three.")
]
TrainOption = Annotated[
    list[str] | None,
    typer.Option("--arch", help=f"What to train (repeatable): {', '.join(TRAINED)}; default: all, in that order."),
]


def register(app: typer.Typer) -> None:
    app.command("train-demo")(train_demo)
    app.add_typer(demo_app, name="demo")


def _chosen(arches: list[str] | None, known: tuple[str, ...] = DEMO_ARCHS) -> list[str]:
    chosen = arches or list(known)
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise typer.BadParameter(f"unknown demo arch(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return chosen


def train_demo(
    arch: TrainOption = None,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and data order.")] = 0,
    output_dir: Annotated[
        Path | None, typer.Option(help="Where to write <arch>.safetensors; default: models/demo/weights/.")
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="A 20-step schedule per model (CI smoke run); needs --output-dir.")
    ] = False,
) -> None:
    """Train the demo models on CPU (seeded, reproducible) and save their weights as float16 safetensors.

    The committed weights come from these plans (`OMP_NUM_THREADS=1 paca train-demo`; docs/demo-models.md
    gives the schedules, how long they take and how the committed files were produced).
    """
    from demo.train import PLANS, QUICK_PLANS, train_and_save

    if quick and output_dir is None:
        raise typer.BadParameter("--quick weights are for smoke runs only; give --output-dir so that they do "
                                 "not replace the committed weights", param_hint="--quick")
    plans = QUICK_PLANS if quick else PLANS
    seconds = train_and_save(_chosen(arch, TRAINED), seed=seed, output_dir=output_dir, plans=plans)
    for name, took in seconds.items():
        typer.echo(f"{name}: trained in {took / 60:.1f} min")


@demo_app.command("ensure")
def ensure(
    artifacts_dir: Annotated[Path, typer.Option(help="Where the served ONNX artifacts go.")] = DEFAULT_ARTIFACTS,
    seed: Annotated[int, typer.Option(help="Seed used if weights must be trained.")] = 0,
) -> None:
    """Make sure every demo model has weights (train if missing) and an up-to-date ONNX artifact (export if
    missing, older than its weights, or written by another exporter version)."""
    from demo.artifacts import artifact_path, is_stale
    from models.demo.archs import weights_path

    for name in DEMO_ARCHS:
        artifact = artifact_path(name, artifacts_dir)
        if weights_path(name).exists() and not is_stale(name, artifacts_dir):
            typer.echo(f"{name}: {artifact} present")
            continue
        if artifact.exists():
            typer.echo(f"{name}: {artifact} is out of date (older than its weights or another exporter version)")
        try:
            _ensure_one(name, artifacts_dir, seed)
        except ImportError as exc:
            typer.secho(f"{name}: skipped, its model code is not available here ({exc})", fg="yellow", err=True)


def _ensure_one(name: str, artifacts_dir: Path, seed: int) -> None:
    from demo.artifacts import artifact_path, fresh_artifact
    from models.demo.archs import weights_path

    if not weights_path(name).exists():
        from demo.train import train_and_save, training_chain

        chain = training_chain(name)
        typer.echo(f"{name}: no weights at {weights_path(name)}; training {', '.join(chain)} (seed {seed})")
        train_and_save(chain, seed=seed)
    typer.echo(f"{name}: exporting {artifact_path(name, artifacts_dir)}")
    fresh_artifact(name, artifacts_dir)


@demo_app.command("eval")
def evaluate(
    arch: ArchOption = None,
    scenes: Annotated[int, typer.Option(help="Held-out scenes for detection/segmentation.")] = 200,
    score_threshold: Annotated[
        float | None, typer.Option(help="Detection score threshold of the found/precision figures; "
                                        "default: the demo detector's recommended default.")
    ] = None,
    latency: Annotated[
        bool, typer.Option(help="Also time the served ONNX artifacts (ONNX Runtime CPU, 1 thread), "
                                "exporting any that are missing or older than their weights.")
    ] = True,
    artifacts_dir: Annotated[Path, typer.Option(help="Where the served ONNX artifacts are.")] = DEFAULT_ARTIFACTS,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON.")] = None,
) -> None:
    """Held-out accuracy of the trained demo models (PyTorch, CPU): top-1, box/mask mAP, digits found with
    the right label and precision at the default score threshold, mIoU, majority label per digit; and
    latency per image of their ONNX artifacts."""
    from rich.console import Console
    from rich.table import Table

    from demo.evaluate import evaluate_offline
    from models.demo.archs import DETECTION_SCORE_THRESHOLD

    chosen = _chosen(arch)
    threshold = DETECTION_SCORE_THRESHOLD if score_threshold is None else score_threshold
    figures = evaluate_offline(chosen, scene_count=scenes, score_threshold=threshold)
    if latency:
        for name, timing in _latencies(chosen, artifacts_dir).items():
            figures[name].update(timing)
    table = Table("arch", "metric", "value")
    for name, metrics in figures.items():
        for metric, value in metrics.items():
            table.add_row(name, metric, f"{value:.0f}" if metric in ("images", "digits") else f"{value:.2f}")
    Console().print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


def _latencies(arches: list[str], artifacts_dir: Path) -> dict[str, dict[str, float]]:
    from demo import evaluate as held_out
    from demo.artifacts import fresh_artifact
    from demo.latency import latency_ms

    scenes = [s.image for s in held_out.heldout_scenes(LATENCY_IMAGES)]
    digits = list(held_out.heldout_digits(LATENCY_IMAGES)[0])
    return {
        name: latency_ms(name, fresh_artifact(name, artifacts_dir), digits if name == "demo_digits_cls" else scenes)
        for name in arches
    }
