#!/usr/bin/env bash
# Build (once) and link the TensorRT engines a GPU server needs.
#
# Why: a TensorRT plan only runs on the GPU architecture and TensorRT version that built it
# (serving-reference §C.9), and building takes minutes. Engines are therefore built on the target GPU at
# start (init container or image entrypoint) and cached on a persistent volume under a key made of the GPU
# name + compute capability + TensorRT version + PaCa Serve version; a restart on the same kind of node finds
# them and starts in seconds; an engine whose manifest names another ONNX hash (a re-exported model) is
# rebuilt. Builds write to a temporary file and rename it, so replicas sharing the
# volume never see half-written plans.
#
# Usage: ensure-engines.sh ONNX_DIR [MODEL ...]
#   MODEL defaults to $PACA_ENGINE_MODELS (space-separated), else every ONNX_DIR/*.onnx except detectors.
# Environment:
#   PACA_ENGINE_CACHE  persistent cache root (default /var/cache/paca/engines)
#   PACA_ENGINE_DIR    where the server reads <model>.plan: symlinks into the cache (default /run/paca/engines)
#   PACA_BUILD_ARGS    extra arguments for `paca build-engine` (e.g. "--fp16")
set -euo pipefail

ONNX_DIR="${1:?usage: ensure-engines.sh ONNX_DIR [MODEL ...]}"
shift
CACHE_ROOT="${PACA_ENGINE_CACHE:-/var/cache/paca/engines}"
ENGINE_DIR="${PACA_ENGINE_DIR:-/run/paca/engines}"
PYTHON="${PYTHON:-python3}"

log() { echo "ensure-engines: $*" >&2; }

slug() { tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9.' '-' | sed 's/^-*//; s/-*$//'; }

cache_key() {
    local gpu name cc trt paca
    gpu="$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader | head -n 1)"
    name="$(echo "${gpu%,*}" | slug)"
    cc="$(echo "${gpu##*,}" | tr -d ' .')"
    trt="$("$PYTHON" -c 'import tensorrt; print(tensorrt.__version__)')"
    paca="$(paca version)"
    echo "${name}-sm${cc}-trt${trt}-paca${paca}"
}

# The sha256 of the ONNX file an engine was built from, as its manifest records it (empty if unknown): a
# re-exported model (new weights, same versions) must not reuse the old engine.
manifest_onnx_sha256() {
    [ -f "$1" ] || return 0
    "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("onnx_sha256", ""))' "$1"
}

if [ "$#" -gt 0 ]; then
    models=("$@")
elif [ -n "${PACA_ENGINE_MODELS:-}" ]; then
    read -r -a models <<<"$PACA_ENGINE_MODELS"
else
    models=()
    for onnx in "$ONNX_DIR"/*.onnx; do
        name="$(basename "$onnx" .onnx)"
        case "$name" in *detector*) continue ;; esac
        models+=("$name")
    done
fi

key="$(cache_key)"
cache_dir="$CACHE_ROOT/$key"
mkdir -p "$cache_dir" "$ENGINE_DIR"
log "cache $cache_dir"

for model in "${models[@]}"; do
    onnx="$ONNX_DIR/$model.onnx"
    plan="$cache_dir/$model.plan"
    [ -f "$onnx" ] || { log "missing $onnx"; exit 1; }
    if [ -f "$plan" ] && [ "$(manifest_onnx_sha256 "$plan.json")" = "$(sha256sum "$onnx" | cut -d' ' -f1)" ]; then
        log "$model: cached"
    else
        log "$model: building (minutes)"
        tmp="$cache_dir/.$model.$$.plan"
        # shellcheck disable=SC2086  # PACA_BUILD_ARGS is a list of words on purpose
        paca build-engine "$onnx" --output "$tmp" ${PACA_BUILD_ARGS:-}
        # The manifest (TensorRT version, GPU, profiles; checked at load) moves with its plan, plan last.
        for manifest in "$tmp.json" "${tmp%.plan}.json"; do
            if [ -f "$manifest" ]; then mv -f "$manifest" "$plan.json"; fi
        done
        mv -f "$tmp" "$plan"
    fi
    ln -sfn "$plan" "$ENGINE_DIR/$model.plan"
    if [ -f "$plan.json" ]; then  # both manifest namings: <model>.plan.json and <model>.json
        ln -sfn "$plan.json" "$ENGINE_DIR/$model.plan.json"
        ln -sfn "$plan.json" "$ENGINE_DIR/$model.json"
    fi
done
log "ready: ${models[*]}"
