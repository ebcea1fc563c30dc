#!/usr/bin/env bash
# Every GPU test (pytest -m "gpu or tensorrt") and every GPU benchmark in one go, results in one folder.
# Works with the project's .venv, or on the lent GPU machine with its system python3 (PYTHONPATH=.).
# Usage: scripts/gpu-check.sh [RESULTS_DIR]   (default: gpu-results/<UTC timestamp>)
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${1:-${OUT:-gpu-results}/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$RESULTS"
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"; fi

{
  echo "date: $(date -u)"; echo "python: $($PY --version 2>&1)"
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>&1
  $PY - <<'PY' 2>&1
import importlib
for name in ("torch", "triton", "onnx", "onnxruntime", "onnxscript", "tensorrt"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:  # report what is missing, keep going
        print(name, "not available:", type(exc).__name__, exc)
import torch
print("cuda available:", torch.cuda.is_available())
PY
} | tee "$RESULTS/environment.txt"

status=0
echo "== pytest -m 'gpu or tensorrt'"
# addopts cleared: the GPU image may lack pytest-timeout; collection errors (e.g. no fastapi there) must not stop the run
$PY -m pytest -o addopts="" -m "gpu or tensorrt" -rA -q -p no:cacheprovider --continue-on-collection-errors --junitxml="$RESULTS/gpu-tests.xml" tests \
  2>&1 | tee "$RESULTS/gpu-tests.txt" || status=1

for bench in benchmarks/kernel_*.py; do
  [[ -e "$bench" ]] || continue
  name="$(basename "$bench" .py)"
  echo "== $bench"
  $PY "$bench" --json "$RESULTS/$name.json" 2>&1 | tee "$RESULTS/$name.txt" || status=1
done

echo "results in $RESULTS (exit $status)"
exit $status
