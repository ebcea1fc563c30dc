"""`paca bench serving` end to end in its smoke mode (seconds): every system starts, every leg runs, and the
JSON, markdown and plot it writes hold what they should. Figures are not judged here (docs/performance.md)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from service.cli import app
from tests.support.server import PERF_ANALYZER


def test_bench_serving_smoke_run_writes_rows_goals_and_a_plot(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "serving", "--smoke", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "serving.json").read_text())
    rows = {(r["system"], r["leg"], r["concurrency"]): r for r in report["rows"]}
    expected_legs = {"python-v2", "python-rest"} | ({"perf_analyzer-http", "perf_analyzer-grpc"}
                                                    if PERF_ANALYZER.exists() else set())
    assert {leg for system, leg, _ in rows if system == "paca-serve"} == expected_legs
    assert ("raw ORT batch 1", "raw", 1) in rows and ("naive FastAPI", "python-peer", 2) in rows
    for row in report["rows"]:
        assert row["per_s"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"], row
    assert rows["paca-serve", "python-rest", 1]["overhead_p50_ms"] >= 0
    figures = [goal[0] for goal in report["goals"]]
    assert any("p50 at c=1" in f for f in figures) and any("REST image path" in f for f in figures)
    table = (tmp_path / "serving.md").read_text()
    assert "### Goals" in table and "| paca-serve | python-v2 | 1 |" in table
    with Image.open(tmp_path / "serving.png") as plot:
        assert plot.format == "PNG" and plot.width > 800
