"""The example answers in README.md and docs/api.md are what the server answers (scripts/render_api_examples.py
runs each documented curl command against the embedded demo models and compares, allowing float noise)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "render_api_examples.py"


def _script():
    spec = importlib.util.spec_from_file_location("render_api_examples", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def test_abbreviation_and_tolerance() -> None:
    render = _script()
    answer = {"results": [{"top_k": [{"label": "7", "score": 0.881234}, {"label": "2", "score": 0.0705}]}],
              "rle": "x" * 60, "ids": list(range(10))}
    shown = render.abbreviate(answer)
    assert shown["rle"] == "x" * render.CHARS + "…" and shown["ids"] == [0, 1, 2, 3, "…"]
    assert shown["results"][0]["top_k"][0]["score"] == 0.8812
    noisy = render.abbreviate({**answer, "results": [{"top_k": [{"label": "7", "score": 0.8815},
                                                                 {"label": "2", "score": 0.0706}]}]})
    assert render.differences(shown, noisy) == []  # thread-count noise is not drift
    relabelled = render.abbreviate({**answer, "results": [{"top_k": [{"label": "1", "score": 0.881234},
                                                                      {"label": "2", "score": 0.0705}]}]})
    assert render.differences(shown, relabelled) == ["$.results[0].top_k[0].label: '7' ≠ '1'"]
    assert render.differences({"box": [10.0]}, {"box": [10.4]}) == []
    assert render.differences({"a": 1}, {"a": 1, "b": 2})


@pytest.fixture(scope="module")
def curl() -> str:
    found = shutil.which("curl")
    if found is None:
        pytest.skip("curl is not installed: the documented examples are curl commands")
    return found


def test_the_docs_show_what_the_server_answers(demo_artifacts, curl: str, tmp_path: Path) -> None:
    """README.md and docs/api.md agree with the server; a copy whose first answer names another digit does not
    (so the check can fail)."""
    drifted = tmp_path / "drifted.md"
    text = (REPO_ROOT / "README.md").read_text()
    drifted.write_text(text.replace('"label": "7"', '"label": "1"', 1))
    assert drifted.read_text() != text
    result = subprocess.run([sys.executable, str(SCRIPT), "--check", str(REPO_ROOT / "README.md"),
                             str(REPO_ROOT / "docs" / "api.md"), str(drifted)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    drift = [line for line in result.stderr.splitlines() if ": $" in line]
    from_docs = [line for line in drift if line.startswith(("README.md", "api.md"))]
    assert not from_docs, "the docs' examples drifted; run scripts/render_api_examples.py:\n" + "\n".join(from_docs)
    assert result.returncode == 1 and any(line.startswith("drifted.md") and "'1' ≠ '7'" in line
                                          for line in drift), result.stderr[-3000:]
