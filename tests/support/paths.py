"""Where the repository, its small test data and the optional large reference files are.

Small reference data (official key manifests) lives in `tests/data/`. The large golden files from the
official implementation (weights and outputs, ~57 MB) are not committed: they are looked up in
`$PACA_REFERENCE_DIR`, else in `reference/paca/` of a `shared/` folder beside the checkout. Tests that
need them skip with the reason when they are absent, unless `PACA_REQUIRE_REFERENCE=1` (CI) turns the
skip into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_DATA = REPO_ROOT / "tests" / "data"
MANIFESTS = TEST_DATA / "manifests"


def golden_dir() -> Path:
    configured = os.environ.get("PACA_REFERENCE_DIR")
    if configured:
        return Path(configured)
    return REPO_ROOT.parent / "shared" / "reference" / "paca"


def reference_required() -> bool:
    return os.environ.get("PACA_REQUIRE_REFERENCE", "").lower() in ("1", "true", "yes")
