"""The service imports `models` for specs, preprocessing and labels without torch (ONNX Runtime backend)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.paths import REPO_ROOT

PROBE = """
import sys
import models, models.cli, models.labels, models.preprocess, models.preprocess_spec
models.list_archs()
spec = models.get_arch("pacavit_tiny_p2cconv_100_0")
models.labels.load_labels(spec.labels)
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_models_package_imports_without_torch() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_build_is_reachable_lazily() -> None:
    import models
    from models.builder import build, cluster_maps

    assert models.build is build and models.cluster_maps is cluster_maps
