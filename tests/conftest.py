"""Shared test fixtures: where the reference data lives, and small-thread torch settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PACA_SHARED", REPO_ROOT.parent / "shared"))
REFERENCE = SHARED / "reference" / "paca"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.fail(f"reference data not found at {REFERENCE} (set PACA_SHARED)")
    return REFERENCE
