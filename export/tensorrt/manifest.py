"""The JSON manifest written beside every engine, and the check that refuses a mismatched engine.

A plan only runs on the TensorRT version that built it and on GPUs of the same compute capability
(TensorRT's compatibility rules); the manifest records both (plus profiles, precision and the source
ONNX hash) so a mismatch fails with a message instead of a deserialisation error.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from export.op_spec import PLUGIN_VERSION
from export.tensorrt.profiles import ShapeProfile

MANIFEST_VERSION = 1


class EngineMismatchError(RuntimeError):
    """The engine was built for another TensorRT version, GPU or ONNX file."""


@dataclass(frozen=True)
class MachineInfo:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"


@dataclass(frozen=True)
class EngineManifest:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: tuple[ShapeProfile, ...]
    onnx_sha256: str
    onnx_file: str
    plugin: str = f"paca::PaCaAttention v{PLUGIN_VERSION}"
    arch: str = ""
    task: str = ""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    manifest_version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data["profiles"] = [p.to_json() for p in self.profiles]
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EngineManifest:
        data = json.loads(text)
        data["profiles"] = tuple(ShapeProfile.from_json(p) for p in data["profiles"])
        return cls(**data)


def manifest_path(engine_path: str | os.PathLike) -> Path:
    """`model.plan` → `model.plan.json`."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(engine_path: str | os.PathLike, manifest: EngineManifest) -> Path:
    path = manifest_path(engine_path)
    path.write_text(manifest.to_json() + "\n", encoding="utf-8")
    return path


def read_manifest(engine_path: str | os.PathLike) -> EngineManifest:
    path = manifest_path(engine_path)
    if not path.is_file():
        raise EngineMismatchError(f"{engine_path}: manifest {path.name} is missing; rebuild the engine with "
                                  "`paca build-engine`")
    return EngineManifest.from_json(path.read_text(encoding="utf-8"))


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def check_manifest(manifest: EngineManifest, machine: MachineInfo, onnx_path: str | os.PathLike | None = None) -> None:
    """Raise EngineMismatchError naming every difference between where the engine was built and here."""
    problems = []
    if manifest.tensorrt_version != machine.tensorrt_version:
        problems.append(f"built with TensorRT {manifest.tensorrt_version}, this machine has "
                        f"{machine.tensorrt_version} (plans are tied to the exact TensorRT version)")
    if manifest.compute_capability != machine.compute_capability:
        problems.append(f"built for compute capability {manifest.compute_capability} ({manifest.gpu_name}), "
                        f"this GPU is {machine.compute_capability} ({machine.gpu_name})")
    if onnx_path is not None and file_sha256(onnx_path) != manifest.onnx_sha256:
        problems.append(f"built from another ONNX file than {onnx_path} (sha256 differs)")
    if problems:
        raise EngineMismatchError("engine does not match this machine: " + "; ".join(problems)
                                  + ". Rebuild it here with `paca build-engine`.")


def cache_key(machine: MachineInfo, precision: str) -> str:
    """Timing-cache / engine-cache key: TensorRT major.minor, compute capability, plugin version, precision."""
    cc = machine.compute_capability.replace(".", "")
    return f"trt{_major_minor(machine.tensorrt_version)}-sm{cc}-paca{PLUGIN_VERSION}-{precision}"


def default_timing_cache(machine: MachineInfo, precision: str, root: str | os.PathLike | None = None) -> Path:
    base = Path(root) if root is not None else Path(os.environ.get("PACA_CACHE", Path.home() / ".cache" / "paca"))
    return base / "tensorrt" / f"timing-{cache_key(machine, precision)}.cache"
