"""Registry of architectures by name: what each is, how to build it, and its pre/post-processing data.

Modules that define archs call `register()` at import; `_BUILTIN_MODULES` lists them and is
imported on first lookup, so importing the registry itself stays cheap (no torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from models.preprocess_spec import PreprocessSpec
from models.tasks import Task, TaskSpec, task_spec

if TYPE_CHECKING:
    import torch

StateDict = dict[str, "torch.Tensor"]

# Modules whose import registers archs; a module that does not exist (yet) is skipped.
_BUILTIN_MODULES = ("models.classification", "models.segmentation", "models.detection", "models.demo.archs")


@dataclass(frozen=True)
class ArchSpec:
    """Everything the project needs to know about one architecture.

    `factory` builds the randomly initialised model. `convert_checkpoint` maps a foreign checkpoint
    layout (mmseg/mmdet prefixes, torchvision detector keys) onto our keys; it runs after the generic
    unwrapping (`state_dict`/`model`/`state_dict_ema`, `module.` prefixes). Keys starting with one of
    `ignored_checkpoint_prefixes` (training-only parts such as UperNet's `auxiliary_head.`) are dropped.
    Downstream archs name their `backbone` (a classification variant) and segmentors their `head`;
    `weights` points at weights bundled with the code (the demo models); `note` warns about a known
    ambiguity of the official release files.
    """

    name: str
    task: Task
    factory: Callable[[], torch.nn.Module]
    preprocess: PreprocessSpec
    labels: str  # label-set name, see models.labels
    checkpoint_files: tuple[str, ...] = ()  # official release files that go with this arch
    convert_checkpoint: Callable[[StateDict], StateDict] | None = None
    ignored_checkpoint_prefixes: tuple[str, ...] = ()
    description: str = ""
    backbone: str | None = None
    head: str | None = None
    weights: Path | None = None
    note: str = ""

    @property
    def task_spec(self) -> TaskSpec:
        return task_spec(self.task)


_REGISTRY: dict[str, ArchSpec] = {}
_loaded = False


def register(spec: ArchSpec) -> ArchSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"arch {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module_name in _BUILTIN_MODULES:
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise


def get_arch(name: str) -> ArchSpec:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown arch {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def list_archs(task: Task | None = None) -> list[str]:
    _load_builtin()
    return sorted(name for name, spec in _REGISTRY.items() if task is None or spec.task == task)
