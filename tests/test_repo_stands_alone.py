"""The repository stands on its own: no tracked file sends a reader to a document users do not have.

Facts from the team's reference notes belong in the repository itself (docs/, a comment stating the fact)
or cite a public source (the paper, github.com/iVMCL/PaCaViT, mmdetection, Triton, TensorRT, KServe).
Only the CI plumbing may name the team folder: `.ci/` and the golden-file default in tests/support/paths.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

# The `[-]`, `[ ]` classes keep this file from matching its own pattern, so it is scanned like any other.
TEAM_ONLY_REFERENCE = re.compile(
    r"shared/(docs|reference)|\.\./shared/|environment\.md|serving[-]reference|spec[ ]§|detector[-]mapping"
    r"|paca[-]model[-]spec|style\.md",
    re.IGNORECASE,
)
ALLOWED_PREFIXES = (".ci/",)
ALLOWED_FILES = frozenset({"tests/support/paths.py"})
BINARY_PROBE_BYTES = 8192


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    files = [name for name in listing.decode("utf-8", "surrogateescape").split("\0") if name]
    assert "pyproject.toml" in files, "git ls-files did not list the repository's files"
    return files


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary file, a symlink or a tracked file missing from the work tree."""
    if path.is_symlink() or not path.is_file():
        return None
    data = path.read_bytes()
    if b"\0" in data[:BINARY_PROBE_BYTES]:
        return None
    return data.decode("utf-8", errors="replace")


def offending_lines(text: str) -> list[tuple[int, str]]:
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)
            if TEAM_ONLY_REFERENCE.search(line)]


# Each sample is split into literals so that the lines of this file stay clean.
@pytest.mark.parametrize("line", [
    "see ../sha" "red/docs/environ" "ment.md §9.2",
    "(spec" " §17)",
    "Spec" " §18.2 written out",
    "(detector-" "mapping.md §3b.4)",
    "serving-" "reference §E.2",
    "paca-model-" "spec.md",
    "in shared/" "reference/paca/<arch>.keys.json",
    "the house style (style" ".md)",
])
def test_the_pattern_catches_every_form_of_team_only_reference(line: str) -> None:
    assert offending_lines(line) == [(1, line)]


@pytest.mark.parametrize("line", [
    "see docs/downstream-models.md, 'What matches mmdet'",
    "set PACA_REFERENCE_DIR to the folder holding the golden files",
    "shared memory of the compiled kernel; a shared machine",
    "github.com/iVMCL/PaCaViT `models/paca_vit.py`",
])
def test_the_pattern_leaves_ordinary_text_alone(line: str) -> None:
    assert offending_lines(line) == []


def test_no_tracked_file_cites_a_team_only_document() -> None:
    found: list[str] = []
    for name in tracked_files():
        if name in ALLOWED_FILES or name.startswith(ALLOWED_PREFIXES):
            continue
        text = text_of(REPO_ROOT / name)
        if text is None:
            continue
        found += [f"{name}:{number}: {line}" for number, line in offending_lines(text)]
    assert not found, ("these lines point readers to documents that only exist on team machines; state the fact "
                       "in place or cite docs/ or a public source:\n" + "\n".join(found))
