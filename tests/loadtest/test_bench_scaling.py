"""`paca bench scaling` runs benchmarks/scaling.py end to end: a seconds-long smoke run at tiny sizes with one
model pair, every output checked. Its figures are not judged (timing is for the full run, docs/performance.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import loadtest.cli
from service.cli import app


def test_bench_scaling_smoke_run_writes_json_table_and_plot(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "scaling", "--models", "paca_tiny,pvt_v2_b1", "--sizes", "64,96",
                                      "--rounds", "2", "--warmup", "1", "--threads", "1", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "scaling.json").read_text())
    assert report["models_order"] == ["paca_tiny", "pvt_v2_b1"] and report["settings"]["sizes"] == [64, 96]
    rows = {(r["model"], r["size"]): r for r in report["results"]}
    assert set(rows) == {(m, s) for m in ("paca_tiny", "pvt_v2_b1") for s in (64, 96)}
    for row in rows.values():
        assert len(row["samples_ms"]) == 2 and row["median_ms"] > 0 and row["peak_mib"] > 0
        assert row["ms_per_megapixel"] == pytest.approx(row["median_ms"] / (row["pixels"] / 1e6))
    for model in ("paca_tiny", "pvt_v2_b1"):
        # ×2.25 pixels: the work grows, by at most about as much (PaCa's 100 cluster tokens cost the same at
        # any size, so at these tiny sizes it grows less: ×1.9); the FLOP counter is torch's FlopCounterMode.
        assert 1.5 < rows[model, 96]["gflops"] / rows[model, 64]["gflops"] < 2.6
        assert report["growth"][model]["pixel_ratio"] == pytest.approx(2.25)
    assert report["models"]["paca_tiny"]["params_m"] == pytest.approx(12.2, abs=0.1)  # PaCa-Tiny's 12.2 M
    table = (tmp_path / "scaling.md").read_text()
    assert "| PaCa-Tiny (PaCaAttention function) | 12.2 |" in table and "64² | 96²" in table
    with Image.open(tmp_path / "scaling.png") as plot:
        assert plot.format == "PNG" and plot.width > 1000 and plot.height > 700
    assert sorted(p.name for p in (tmp_path / "onnx").glob("*.onnx")) == [
        "paca_tiny_64.onnx", "paca_tiny_96.onnx", "pvt_v2_b1_64.onnx", "pvt_v2_b1_96.onnx"]


def test_bench_needs_the_source_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loadtest.cli, "CHECKOUT", tmp_path)  # an installed package without benchmarks/
    result = CliRunner().invoke(app, ["bench", "scaling"])
    assert result.exit_code == 2
    assert "benchmarks/scaling.py not found" in result.output and "clone" in result.output
