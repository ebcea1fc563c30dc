"""Reading checkpoints safely and fitting them strictly onto a model (accepted forms: docs/models.md).

Pipeline: read the file (`.pth` through the restricted unpickler, or `.safetensors`) → unwrap the
training wrapper (`state_dict` → `model` → `state_dict_ema`) → strip `module.` → the arch's own
layout converter → drop training-only prefixes → (classification only) strip `backbone.` from a
downstream checkpoint → cast floats to the model's dtype → strict key **and** shape comparison.
Every mismatch is reported at once, so a wrong file is diagnosed in one go.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from models.registry import ArchSpec, StateDict

WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema")
DATA_PARALLEL_PREFIX = "module."
BACKBONE_PREFIX = "backbone."
MAX_LISTED_KEYS = 10


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


class CheckpointMismatchError(CheckpointError):
    """Missing, unexpected or wrongly shaped keys (all of them are listed, long lists truncated)."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


# ----------------------------------------------------------------------------------------- reading


def read_checkpoint_file(path: str | os.PathLike) -> object:
    """The raw object stored in `path`. `.pth` files never unpickle anything but tensors and containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain containers, which the safe loader refuses "
            f"(torch.load weights_only=True). If you trust the file, convert it once, offline, to safetensors "
            f"in a separate environment, e.g. `sd = torch.load(path, weights_only=False)['state_dict']; "
            f"safetensors.torch.save_file(sd, 'model.safetensors')`, and load that instead. "
            f"Refused: {_unpickler_reason(exc)}"
        ) from exc
    except Exception as exc:  # the unpickler signals corrupt input with many exception types
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {type(exc).__name__}: {exc}") from exc


def _unpickler_reason(exc: Exception) -> str:
    """The line of torch's long message that names the refused object."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line.split(":", 1)[1].strip() for line in lines if "WeightsUnpickler error" in line),
                lines[0] if lines else type(exc).__name__)


def unwrap_state_dict(obj: object) -> StateDict:
    """The tensor mapping inside a training checkpoint: `state_dict`, else `model`, else `state_dict_ema`."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"a checkpoint must hold a mapping of tensors, found {type(obj).__name__}")
    for wrapper in WRAPPER_KEYS:
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    non_tensors = [key for key, value in obj.items() if not isinstance(value, torch.Tensor)]
    if non_tensors:
        raise CheckpointError(
            f"the checkpoint's state_dict has {len(non_tensors)} non-tensor entries "
            f"({_listing(non_tensors)}); expected a bare state_dict or one wrapped in one of {WRAPPER_KEYS}"
        )
    return dict(obj)


def strip_prefix(state_dict: StateDict, prefix: str) -> StateDict:
    """Remove `prefix` from every key that has it (others are kept unchanged)."""
    return {(key[len(prefix):] if key.startswith(prefix) else key): value for key, value in state_dict.items()}


def drop_prefixes(state_dict: StateDict, prefixes: Iterable[str]) -> StateDict:
    prefixes = tuple(prefixes)
    if not prefixes:
        return state_dict
    return {key: value for key, value in state_dict.items() if not key.startswith(prefixes)}


# -------------------------------------------------------------------------------------- conversion


def to_arch_layout(raw: object, spec: ArchSpec) -> StateDict:
    """Bring any supported checkpoint form into the key layout of `spec`'s model (no shape checks yet)."""
    state_dict = unwrap_state_dict(raw)
    state_dict = strip_prefix(state_dict, DATA_PARALLEL_PREFIX)
    if spec.convert_checkpoint is not None:
        state_dict = spec.convert_checkpoint(state_dict)
    state_dict = drop_prefixes(state_dict, spec.ignored_checkpoint_prefixes)
    if spec.task == "classification" and any(key.startswith(BACKBONE_PREFIX) for key in state_dict):
        state_dict = _backbone_only(state_dict, spec)
    return state_dict


def _backbone_only(state_dict: StateDict, spec: ArchSpec) -> StateDict:
    """A downstream (mmdet/mmseg) checkpoint given to a classifier: keep just its `backbone.` part."""
    backbone = {key[len(BACKBONE_PREFIX):]: value for key, value in state_dict.items()
                if key.startswith(BACKBONE_PREFIX)}
    if not any(key.startswith("head.") for key in backbone):
        raise CheckpointError(
            f"this is a downstream (detection/segmentation) checkpoint: it holds only a backbone "
            f"({len(backbone)} `backbone.*` tensors) and no classifier `head.*`, so it cannot build the "
            f"classification arch {spec.name!r}. Load it with the matching detection/segmentation arch "
            f"(`paca models list`), or use an ImageNet checkpoint ({', '.join(spec.checkpoint_files) or 'none'})."
        )
    return backbone


def expected_layout(model: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Key → (shape, dtype) of the model's state_dict, in module order (works on meta-device models)."""
    return {key: (tuple(value.shape), value.dtype) for key, value in model.state_dict().items()}


def check_fits(state_dict: StateDict, layout: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
               what: str = "model") -> None:
    """Raise `CheckpointMismatchError` unless keys and shapes match exactly."""
    missing = [key for key in layout if key not in state_dict]
    unexpected = [key for key in state_dict if key not in layout]
    mismatched = [
        (key, tuple(state_dict[key].shape), layout[key][0])
        for key in layout
        if key in state_dict and tuple(state_dict[key].shape) != layout[key][0]
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if mismatched:
        shown = [f"{key} (checkpoint {list(got)} vs model {list(want)})" for key, got, want in mismatched]
        parts.append(f"{len(mismatched)} shape mismatch(es): {_listing(shown)}")
    hint = ""
    if any("clustering" in key or "to_clusters" in key for key, _, _ in mismatched):
        hint = " (a different number of clusters: ADE20k backbones use 200, ImageNet/COCO ones 100; docs/models.md)"
    raise CheckpointMismatchError(
        f"checkpoint does not fit the {what}: " + "; ".join(parts) + hint, missing, unexpected, mismatched
    )


def cast_like(state_dict: StateDict, layout: Mapping[str, tuple[tuple[int, ...], torch.dtype]]) -> StateDict:
    """Cast floating tensors to the model's dtype for that key; integer buffers (`num_batches_tracked`) stay."""
    out = {}
    for key, value in state_dict.items():
        target = layout[key][1] if key in layout else value.dtype
        if value.is_floating_point() and target.is_floating_point and value.dtype != target:
            value = value.to(target)
        out[key] = value
    return out


def ordered_like(state_dict: StateDict, layout: Mapping[str, object]) -> StateDict:
    """The same tensors in the model's key order (for files that are diffable against the manifests)."""
    return {key: state_dict[key] for key in layout}


# ----------------------------------------------------------------------------------------- loading


def load_state_dict_strict(model: nn.Module, state_dict: StateDict, what: str = "model") -> nn.Module:
    layout = expected_layout(model)
    check_fits(state_dict, layout, what)
    model.load_state_dict(cast_like(state_dict, layout), strict=True)
    return model


def load_checkpoint(model: nn.Module, checkpoint: str | os.PathLike, spec: ArchSpec) -> nn.Module:
    """Load `checkpoint` (any supported form) into `model`, built from `spec`, strictly."""
    state_dict = to_arch_layout(read_checkpoint_file(checkpoint), spec)
    try:
        return load_state_dict_strict(model, state_dict, what=f"arch {spec.name!r}")
    except CheckpointMismatchError as exc:
        raise CheckpointMismatchError(f"{checkpoint}: {exc}", exc.missing, exc.unexpected, exc.mismatched) from None


def convert_checkpoint_file(source: str | os.PathLike, target: str | os.PathLike, spec: ArchSpec) -> int:
    """Rewrite any supported checkpoint as a `.safetensors` file in our layout; returns the tensor count.

    The result is validated against the arch (built on the meta device, so no weights are allocated)
    and keeps the source's dtypes.
    """
    from safetensors.torch import save_file

    state_dict = to_arch_layout(read_checkpoint_file(source), spec)
    with torch.device("meta"):
        layout = expected_layout(spec.factory())
    check_fits(state_dict, layout, what=f"arch {spec.name!r}")
    ordered = {key: value.contiguous() for key, value in ordered_like(state_dict, layout).items()}
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    save_file(ordered, str(target), metadata={"paca.arch": spec.name, "format": "pt"})
    return len(ordered)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED_KEYS])
    return shown + (f", … ({len(items) - MAX_LISTED_KEYS} more)" if len(items) > MAX_LISTED_KEYS else "")
