"""Fixtures shared by the whole suite: reference data, the fixture-model artifacts and a running server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import fixture_models
from tests.support.paths import MANIFESTS, golden_dir, reference_required
from tests.support.server import ServerProcess, start_server, stop_server


@pytest.fixture(scope="session")
def manifests_dir() -> Path:
    """Official key manifests (small, committed in tests/data/manifests)."""
    return MANIFESTS


@pytest.fixture(scope="session")
def golden_reference_dir() -> Path:
    """The large golden files of the official implementation; skipped (or failed in CI) when absent."""
    folder = golden_dir()
    if not (folder / fixture_models.GOLDEN_WEIGHTS).is_file():
        reason = (f"golden reference files not found in {folder}: set PACA_REFERENCE_DIR to the folder holding "
                  f"{fixture_models.GOLDEN_WEIGHTS} and its _io file")
        if reference_required():
            pytest.fail(reason + " (PACA_REQUIRE_REFERENCE is set)")
        pytest.skip(reason)
    return folder


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture-model artifacts. PACA_TEST_ARTIFACTS=<dir> keeps them between local runs."""
    cache = os.environ.get("PACA_TEST_ARTIFACTS")
    folder = Path(cache) if cache else tmp_path_factory.mktemp("artifacts")
    return fixture_models.ensure_artifacts(folder)


@pytest.fixture(scope="session")
def server(artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared server: the three fixture models, gRPC on, default settings otherwise."""
    process = start_server(tmp_path_factory.mktemp("server"), fixture_models.repository_dict(artifacts_dir),
                           grpc=True)
    yield process
    stop_server(process)


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http
