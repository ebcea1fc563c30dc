"""Check an exported file against the PyTorch model it came from: ONNX Runtime vs PyTorch, every output.

Used by `paca export --verify` and by the parity tests' helpers; shapes default to the arch's
preprocessing size (dense tasks: a non-square size so H ≠ W is exercised). Batches of more than one
image are also checked against each image run alone (batched serving must not change an answer).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from export.metadata import read_metadata
from models.outputs import wrap_outputs

DEFAULT_ATOL = 1e-4


@dataclass(frozen=True)
class ParityResult:
    batch: int
    hw: tuple[int, int]
    max_abs_diff: dict[str, float]
    batched_vs_alone: dict[str, float] = field(default_factory=dict)  # ONNX Runtime: batch row − image alone

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values(), default=0.0)


def reference_outputs(model: nn.Module, pixels: torch.Tensor) -> list[np.ndarray]:
    """PyTorch's outputs in the artifact's layout (the module export traced)."""
    module, _ = wrap_outputs(model.eval(), pixels)
    with torch.no_grad():
        return [t.numpy() for t in module(pixels)]


def verify_export(path: str | os.PathLike, model: nn.Module, *, batches: tuple[int, ...] = (1, 3),
                  hw: tuple[int, int] | None = None, atol: float = DEFAULT_ATOL, threads: int = 2,
                  seed: int = 0) -> list[ParityResult]:
    """Run both at each batch size; raise AssertionError naming the output if any differs by more than atol."""
    import onnx
    import onnxruntime as ort

    metadata = read_metadata(onnx.load(str(path), load_external_data=False))
    if hw is None:
        fixed = metadata.preprocess.fixed_input_size
        hw = fixed if fixed is not None else (224, 320)
    if not metadata.task_spec.batchable:
        batches = (1,)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results = []
    for batch in batches:
        pixels = torch.randn(batch, 3, *hw, generator=torch.Generator().manual_seed(seed + batch))
        got = session.run(None, {"pixel_values": pixels.numpy()})
        want = reference_outputs(model, pixels)
        diffs = {}
        for name, g, w in zip(names, got, want, strict=True):
            if g.shape != w.shape:
                raise AssertionError(f"{name}: ONNX Runtime shape {g.shape} != PyTorch {w.shape} (batch {batch})")
            diffs[name] = float(np.abs(g.astype(np.float64) - w.astype(np.float64)).max()) if g.size else 0.0
        result = ParityResult(batch, hw, diffs, _batched_vs_alone(session, pixels.numpy(), names, got))
        if result.worst > atol:
            worst = max(diffs, key=diffs.get)
            raise AssertionError(f"{worst}: max |ONNX Runtime − PyTorch| = {diffs[worst]:.3g} > {atol} "
                                 f"at batch {batch}, {hw[0]}x{hw[1]}")
        alone = result.batched_vs_alone
        if alone and max(alone.values()) > atol:
            worst = max(alone, key=alone.get)
            raise AssertionError(f"{worst}: an image of a batch of {batch} differs from the same image run alone "
                                 f"by {alone[worst]:.3g} > {atol} ({hw[0]}x{hw[1]})")
        results.append(result)
    return results


def _batched_vs_alone(session, pixels: np.ndarray, names: list[str], batched: list[np.ndarray]) -> dict[str, float]:
    """Max |row i of the batched run − image i run alone| per output (empty for a batch of one)."""
    if len(pixels) < 2:
        return {}
    diffs = dict.fromkeys(names, 0.0)
    for index in range(len(pixels)):
        alone = session.run(None, {"pixel_values": pixels[index : index + 1]})
        for name, one, rows in zip(names, alone, batched, strict=True):
            if one.shape[1:] != rows.shape[1:]:
                raise AssertionError(f"{name}: shape {one.shape} alone but {rows.shape} in a batch")
            if one.size:
                difference = np.abs(one[0].astype(np.float64) - rows[index].astype(np.float64)).max()
                diffs[name] = max(diffs[name], float(difference))
    return diffs
