"""The TensorRT backend's I/O path (`StagedIO`) and its data-dependent-shape check, on CPU.

`FakeEngineContext` is a TEST DOUBLE of a TensorRT execution context: like TensorRT it reads its inputs
from, and writes its outputs to, the raw addresses it was given (here host memory), so the test checks
that the backend binds the right buffers, copies in before and out after the run, and never hands back a
buffer it reuses. It says nothing about TensorRT or CUDA; on a GPU the same code runs with pinned host
buffers and CUDA device tensors (tests/service/test_backends.py, GPU only).
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

from service.backends.tensorrt_backend import StagedIO, data_dependent_outputs


def view(address: int, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    count = int(np.prod(shape))
    buffer = (ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(address)
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


class FakeEngineContext:
    """TEST DOUBLE: pixel_values (B,3,H,W) → logits (B,2) = [sum, max] per image, pooled (B,3) = channel means."""

    def __init__(self, dynamic_output: bool = False) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.dynamic_output = dynamic_output
        self.runs = 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        batch = self.shapes["pixel_values"][0]
        if name == "boxes":
            return (-1, 4)
        return {"logits": (batch, 2), "pooled": (batch, 3)}[name]

    def execute(self) -> bool:
        pixels = view(self.addresses["pixel_values"], self.shapes["pixel_values"])
        batch = pixels.shape[0]
        view(self.addresses["logits"], (batch, 2))[:] = np.stack([pixels.reshape(batch, -1).sum(1),
                                                                  pixels.reshape(batch, -1).max(1)], 1)
        view(self.addresses["pooled"], (batch, 3))[:] = pixels.mean(axis=(2, 3))
        self.runs += 1
        return True


class FakeEngine:
    def get_tensor_profile_shape(self, name: str, index: int):
        return [(1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8)]


OUTPUTS = [("logits", np.dtype(np.float32)), ("pooled", np.dtype(np.float32))]


def test_staged_io_binds_copies_and_returns_fresh_arrays():
    context = FakeEngineContext()
    io = StagedIO(torch, "cpu", pin=False)
    rng = np.random.default_rng(0)
    first_pixels = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    first = io.run(context, {"pixel_values": first_pixels}, OUTPUTS, ["logits", "pooled"],
                   execute=context.execute, synchronize=lambda: None)
    np.testing.assert_allclose(first["logits"][:, 0], first_pixels.reshape(3, -1).sum(1), rtol=1e-6)
    np.testing.assert_allclose(first["pooled"], first_pixels.mean(axis=(2, 3)), rtol=1e-6)
    address = context.addresses["pixel_values"]

    # A smaller batch reuses the buffers; a larger one grows them; earlier results stay untouched.
    second_pixels = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    second = io.run(context, {"pixel_values": second_pixels}, OUTPUTS, ["logits"],
                    execute=context.execute, synchronize=lambda: None)
    assert context.addresses["pixel_values"] == address and list(second) == ["logits"]
    third_pixels = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
    third = io.run(context, {"pixel_values": third_pixels}, OUTPUTS, ["logits", "pooled"],
                   execute=context.execute, synchronize=lambda: None)
    np.testing.assert_allclose(first["logits"][:, 1], first_pixels.reshape(3, -1).max(1), rtol=1e-6)
    np.testing.assert_allclose(second["logits"][0, 0], second_pixels.sum(), rtol=1e-5)
    np.testing.assert_allclose(third["pooled"], third_pixels.mean(axis=(2, 3)), rtol=1e-6)
    assert third["logits"].shape == (8, 2) and context.runs == 3


def test_staged_io_refuses_a_failed_run_and_a_data_dependent_output():
    context = FakeEngineContext()
    io = StagedIO(torch, "cpu", pin=False)
    pixels = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(RuntimeError, match="execution failed"):
        io.run(context, {"pixel_values": pixels}, OUTPUTS, ["logits"], execute=lambda: False,
               synchronize=lambda: None)
    with pytest.raises(RuntimeError, match="data-dependent shape"):
        io.run(context, {"pixel_values": pixels}, [("boxes", np.dtype(np.float32))], ["boxes"],
               execute=context.execute, synchronize=lambda: None)


def test_data_dependent_outputs_are_found_at_load():
    """Finding 13: the backend asks at load (inputs at the profile's opt shape), not at the first request."""
    context = FakeEngineContext()
    assert data_dependent_outputs(FakeEngine(), context, ["pixel_values"], ["logits", "boxes"]) == ["boxes"]
    assert context.shapes["pixel_values"] == (4, 3, 8, 8)
    assert data_dependent_outputs(FakeEngine(), context, ["pixel_values"], ["logits", "pooled"]) == []
