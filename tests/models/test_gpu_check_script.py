"""scripts/gpu-check.sh without a GPU: its `--cpu` dry run and the JSON summary it writes.

This checks the script (structure, summary, skip reasons, the kernel cases under Triton's interpreter,
the AOT compile), not the GPU: the CUDA checks are skipped here and run only on an NVIDIA machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess

import pytest

from tests.support.paths import REPO_ROOT

CHECKS = ["environment", "triton_kernel", "aot_kernel", "torch_backend", "onnxruntime_cuda", "tensorrt_engine",
          "kernel_benchmark"]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cpu_dry_run_writes_one_summary_with_every_check(tmp_path):
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu-check.sh"), "--cpu", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "gpu-check.log").read_text().count("[") >= len(CHECKS)
    assert summary["mode"] == "cpu-dry-run" and list(summary["checks"]) == CHECKS
    for entry in summary["checks"].values():
        assert {"ran", "passed", "reason", "figures", "status", "seconds"} <= set(entry)
    checks = summary["checks"]
    assert checks["environment"]["figures"]["cuda_available"] in (True, False)
    kernel = checks["triton_kernel"]
    assert kernel["status"] == "passed" and kernel["figures"]["device"] == "cpu"
    assert all(case["max_abs_error"] <= case["tolerance"] for case in kernel["figures"]["cases"])
    assert {case["dtype"] for case in kernel["figures"]["cases"]} == {"float32", "float16"}
    aot = checks["aot_kernel"]
    assert aot["status"] == "passed" and aot["figures"]["launched"].startswith("no (no CUDA device)")
    kernels = aot["figures"]["kernels"]
    assert len(kernels) == 8 and len({k["entry"] for k in kernels}) == 8
    assert all(k["fits_48k"] == (k["shared_bytes"] <= 48 * 1024) for k in kernels)
    for name in ("torch_backend", "onnxruntime_cuda", "tensorrt_engine", "kernel_benchmark"):
        assert checks[name]["status"] == "skipped" and checks[name]["reason"] == "no CUDA device"
    assert summary["overall"] == "passed" and summary["counts"] == {"passed": 3, "failed": 0, "skipped": 4}


def test_summary_records_failures_skips_and_the_time_budget(tmp_path):
    gpu_check = load_gpu_check()
    summary = gpu_check.Summary(tmp_path / "summary.json", "gpu", budget_s=60)

    def broken():
        raise ValueError("boom")

    def cannot():
        raise gpu_check.Skip("needs a thing")

    summary.run("good", lambda: {"figure": 1.5})
    assert json.loads((tmp_path / "summary.json").read_text())["checks"]["good"]["figures"] == {"figure": 1.5}
    summary.run("bad_numbers", lambda: {"passed": False, "error": 0.3})
    summary.run("broken", broken)
    summary.run("cannot", cannot)
    summary.run("too_long", lambda: {}, needs_s=3600)
    data = json.loads((tmp_path / "summary.json").read_text())
    checks = data["checks"]
    assert checks["good"]["status"] == "passed"
    assert checks["bad_numbers"]["status"] == "failed" and checks["bad_numbers"]["figures"] == {"error": 0.3}
    assert checks["broken"]["status"] == "failed" and checks["broken"]["reason"] == "ValueError: boom"
    assert "raise ValueError" in checks["broken"]["figures"]["traceback"]
    assert checks["cannot"] == {**checks["cannot"], "status": "skipped", "ran": False, "reason": "needs a thing"}
    assert checks["too_long"]["status"] == "skipped" and checks["too_long"]["reason"].startswith("time budget")
    assert data["overall"] == "failed" and data["counts"] == {"passed": 1, "failed": 2, "skipped": 2}
