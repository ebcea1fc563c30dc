"""The one small interface every inference backend implements.

A backend owns one inference session (one "instance"); the batcher runs several instances in parallel
when the repository asks for them. Backends see only named numpy arrays: no images, no HTTP.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# KServe v2 datatype names ↔ numpy dtypes.
V2_DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}


def v2_datatype(dtype: np.dtype) -> str:
    for name, candidate in V2_DATATYPES.items():
        if candidate == dtype:
            return name
    raise ValueError(f"no KServe v2 datatype for {dtype}")


@dataclass(frozen=True)
class TensorSpec:
    """Name, v2 datatype and shape of a model input/output; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


class Backend(abc.ABC):
    """One loaded model instance."""

    #: name reported as the Triton "backend"/"platform"
    name: str = "abstract"
    platform: str = "abstract"
    #: True when the source may describe the model only partly (a remote model): parsed leniently
    partial_metadata: bool = False
    #: whether this instance runs on a GPU (Triton's KIND_GPU instance group)
    on_gpu: bool = False

    # Filled in by each backend's constructor.
    _inputs: Sequence[TensorSpec]
    _outputs: Sequence[TensorSpec]
    _metadata: Mapping[str, str]

    def inputs(self) -> Sequence[TensorSpec]:
        """Model inputs, batch dimension included."""
        return self._inputs

    def outputs(self) -> Sequence[TensorSpec]:
        """Model outputs, batch (or detection count) dimension included."""
        return self._outputs

    def metadata(self) -> Mapping[str, str]:
        """The artifact's `paca.*` self-description (see `export.metadata`)."""
        return self._metadata

    @abc.abstractmethod
    def infer(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        """Run one batch; blocking; called from a worker thread, never from the event loop."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the session."""
