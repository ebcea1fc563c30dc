"""The demo models' served ONNX artifacts: where they live and when they must be re-exported."""

from __future__ import annotations

from pathlib import Path

from models.demo.archs import SERVED_NAMES, weights_path

DEFAULT_ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "demo"


def artifact_path(arch: str, artifacts_dir: Path = DEFAULT_ARTIFACTS) -> Path:
    return artifacts_dir / f"{SERVED_NAMES[arch]}.onnx"


def artifact_is_current(artifact: Path, weights: Path) -> bool:
    """Whether `artifact` can be served as is: present, not older than `weights`, and written by this exporter
    version (`paca.exporter_version`); an older contract may not fit the service (e.g. a one-image detector)."""
    if not artifact.exists() or artifact.stat().st_mtime < weights.stat().st_mtime:
        return False
    from export.metadata import EXPORTER_VERSION, onnx_props

    return onnx_props(artifact).get("paca.exporter_version") == EXPORTER_VERSION


def is_stale(arch: str, artifacts_dir: Path = DEFAULT_ARTIFACTS) -> bool:
    """Missing, older than the weights it was exported from (new weights were trained or pulled), or written
    by another exporter version."""
    return not artifact_is_current(artifact_path(arch, artifacts_dir), weights_path(arch))


def fresh_artifact(arch: str, artifacts_dir: Path = DEFAULT_ARTIFACTS) -> Path:
    """The artifact of the committed weights, exported first if stale (written aside, then moved in)."""
    from export import export_onnx

    weights = weights_path(arch)
    if not weights.exists():
        raise FileNotFoundError(f"no demo weights at {weights}; run `paca train-demo --arch {arch}`")
    artifact = artifact_path(arch, artifacts_dir)
    if is_stale(arch, artifacts_dir):
        partial = artifact.with_name(f"partial-{artifact.name}")
        export_onnx(arch, partial, checkpoint=weights)
        partial.replace(artifact)
    return artifact
