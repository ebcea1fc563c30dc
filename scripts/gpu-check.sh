#!/usr/bin/env bash
# The GPU checks in one go, on a machine with an NVIDIA GPU (TensorRT may be absent: its check is then
# skipped and everything else runs): the Triton kernel on CUDA vs the PyTorch reference, the TensorRT
# plugin's AOT kernel launched the way TensorRT launches it, the torch backend on CUDA, ONNX Runtime's CUDA
# provider (if onnxruntime-gpu is there or installs), the TensorRT engine tests, the kernel benchmark.
# Finishes in under 8 minutes (the checks stop starting after 420 s; a hard stop at 470 s) and writes one
# JSON summary, RESULTS_DIR/summary.json (per check: ran / skipped and why / passed / figures), rewritten
# after every check, plus the log.
# Works with the project's .venv, or on a lent GPU machine with its system python3 (PYTHONPATH=.).
# Usage: scripts/gpu-check.sh [--cpu] [RESULTS_DIR]   (default: ${OUT:-gpu-results}/<UTC timestamp>)
#   --cpu  dry run without a GPU: CUDA checks skipped, kernel cases under TRITON_INTERPRET=1, AOT compile only
set -uo pipefail
cd "$(dirname "$0")/.."
mode=()
if [[ "${1:-}" == "--cpu" ]]; then
    mode=(--cpu)
    shift
fi
RESULTS="${1:-${OUT:-gpu-results}/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$RESULTS"
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export GPU_CHECK_WORKDIR="${GPU_CHECK_WORKDIR:-$(mktemp -d)}"
timeout --kill-after=10 470 "$PY" scripts/gpu_check.py --results "$RESULTS" "${mode[@]}" 2>&1 | tee "$RESULTS/gpu-check.log"
status=${PIPESTATUS[0]}
echo "summary: $RESULTS/summary.json (exit $status)"
exit "$status"
