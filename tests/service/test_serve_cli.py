"""`paca serve` with configuration mistakes: one line on stderr naming the problem, exit status 1, no port bound."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT
from tests.support.server import free_port

CASES = {
    "no such file": (None, {}, "model repository {dir}/absent.yaml does not exist"),
    "not YAML": ("models: [\n", {}, "is not valid YAML"),
    "a wrong field type": ("models:\n  - {name: a, artifact: a.onnx, max_batch_size: many}\n", {},
                           "models.0.max_batch_size: Input should be a valid integer"),
    "an unknown field": ("models:\n  - {name: a, artifact: a.onnx, max_batch: 4}\n", {},
                         "models.0.max_batch: Extra inputs are not permitted"),
    "a missing artifact": ("models:\n  - {name: a, artifact: missing.onnx}\n", {},
                           "model 'a': artifact {dir}/missing.onnx does not exist; run `paca demo ensure`"),
    "a bad setting": ("models:\n  - {name: a, artifact: missing.onnx}\n", {"PACA_MAX_REQUEST_BYTES": "lots"},
                      "setting max_request_bytes (PACA_MAX_REQUEST_BYTES): Input should be a valid integer"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_configuration_errors_are_one_line_and_exit_1(case: str, tmp_path: Path) -> None:
    text, env, message = CASES[case]
    config = tmp_path / ("absent.yaml" if text is None else "repository.yaml")
    if text is not None:
        config.write_text(text)
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from service.cli import main; sys.argv[0] = 'paca'; main()", "serve",
         "--config", str(config), "--port", str(port), "--grpc-port", "0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), **env},
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paca serve: "), result.stderr
    assert message.format(dir=tmp_path) in lines[0]


def test_help_lists_every_setting() -> None:
    """`paca serve --help` names every ServerSettings field: a flag, or its PACA_* variable with the default."""
    from service.settings import ServerSettings

    launcher = "import sys; from service.cli import main; sys.argv[0] = 'paca'; main()"
    shown = subprocess.run([sys.executable, "-c", launcher, "serve", "--help"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin"})
    assert shown.returncode == 0, shown.stderr
    for name in ServerSettings.model_fields:
        flag, variable = f"--{name.replace('_', '-')}", f"PACA_{name.upper()}"
        assert flag in shown.stdout or variable in shown.stdout, name
    assert "PACA_TRACING (default False): OpenTelemetry traces" in shown.stdout


def test_the_settings_table_in_the_api_docs_is_complete() -> None:
    """docs/api.md's table has a row for every setting, with the setting's real default."""
    from service.settings import ServerSettings

    rows = {line.split("|")[1].strip(" `"): line.split("|")[3].strip(" `")
            for line in (REPO_ROOT / "docs" / "api.md").read_text().splitlines() if line.startswith("| `PACA_")}
    for name, field in ServerSettings.model_fields.items():
        variable = f"PACA_{name.upper()}"
        assert variable in rows, f"docs/api.md has no row for {variable}"
        default = field.get_default(call_default_factory=True)
        if name != "config":
            shown = ",".join(default) or "none" if isinstance(default, list) else str(default).lower()
            assert rows[variable].lower() == shown, (variable, rows[variable], shown)
