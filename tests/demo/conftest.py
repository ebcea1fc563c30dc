"""The committed demo models served by a real `paca serve` process on loopback (shared by the REST tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.artifacts import fresh_artifact
from models.demo.archs import SERVED_NAMES, weights_path
from tests.support.server import start_server, stop_server

CLASSIFIER, DETECTOR, SEGMENTER = (SERVED_NAMES[a] for a in ("demo_digits_cls", "demo_digits_det", "demo_digits_seg"))


@pytest.fixture
def one_torch_thread():
    """PyTorch on one thread for the test, restored afterwards: the 2-core CI machine also runs the
    server under test, and single-thread results do not depend on how a machine splits the work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_artifacts() -> dict[str, Path]:
    """ONNX artifacts of the committed demo weights, made by the production exporter.

    They live where `paca demo ensure` (and so `make run`) puts them; an artifact older than its
    weights is re-exported (the PaCa exports take minutes on a 2-core machine, so they are cached).
    """
    paths = {}
    for arch, served in SERVED_NAMES.items():
        if not weights_path(arch).exists():
            pytest.fail(f"committed demo weights missing: {weights_path(arch)} (run `paca train-demo`)")
        paths[served] = fresh_artifact(arch)
    return paths


@pytest.fixture(scope="session")
def demo_server(demo_artifacts, tmp_path_factory: pytest.TempPathFactory):
    batching = {"max_queue_delay_ms": 10, "max_queue_size": 1024, "queue_timeout_ms": 300000}
    repository = {"models": [
        {"name": CLASSIFIER, "artifact": str(demo_artifacts[CLASSIFIER]), "max_batch_size": 8, "batching": batching},
        {"name": SEGMENTER, "artifact": str(demo_artifacts[SEGMENTER]), "max_batch_size": 4, "batching": batching},
        {"name": DETECTOR, "artifact": str(demo_artifacts[DETECTOR]), "max_batch_size": 4, "batching": batching},
    ]}
    server = start_server(tmp_path_factory.mktemp("demo-server"), repository)
    yield server
    stop_server(server)
