"""One real `paca serve` for every load-tool test: the demo models when `paca demo ensure` made them, else the
demo classifier exported on the fly; gRPC on; torch made unimportable (the CPU image has none)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.paths import REPO_ROOT
from tests.support.server import ServerProcess, running_server

CLASSIFIER = "demo-digits-classifier"
DEMO_ARTIFACTS = REPO_ROOT / "artifacts" / "demo"
DEMO_ARCHS = {
    "demo-digits-classifier": "demo_digits_cls",
    "demo-digits-segmenter": "demo_digits_seg",
    "demo-digits-detector": "demo_digits_det",
}


@pytest.fixture(scope="session")
def loadtest_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository: the demo artifacts `paca demo ensure` made, else a freshly exported classifier."""
    folder = tmp_path_factory.mktemp("repository")
    available = {
        name: DEMO_ARTIFACTS / f"{name}.onnx" for name in DEMO_ARCHS if (DEMO_ARTIFACTS / f"{name}.onnx").exists()
    }
    if CLASSIFIER not in available:
        from export.onnx_export import export_onnx

        available = {CLASSIFIER: export_onnx(DEMO_ARCHS[CLASSIFIER], folder / f"{CLASSIFIER}.onnx")}
    models = []
    for name, artifact in available.items():
        dense = name != CLASSIFIER
        models.append(
            {
                "name": name,
                "artifact": str(artifact),
                "max_batch_size": 4,
                "batching": {"max_queue_delay_ms": 2, "max_queue_size": 256, "queue_timeout_ms": 30000},
                "warmup": {"image_sizes": [[128, 128]]} if dense else {"enabled": True},
                "options": {"intra_op_threads": 1, "allow_spinning": False},
            }
        )
    path = folder / "repository.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return path


@pytest.fixture(scope="session")
def loadtest_server(loadtest_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`paca serve` on free loopback ports with torch blocked (the serving path must not need it: CPU image)."""
    with running_server(tmp_path_factory.mktemp("server"), loadtest_repository, grpc=True, block_torch=True,
                        extra_args=("--log-text",)) as process:
        yield process
