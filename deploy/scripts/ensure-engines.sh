#!/usr/bin/env bash
# Build (once) and link the TensorRT engines a GPU server needs.
#
# Why: a TensorRT plan only runs on the GPU architecture and TensorRT version that built it, and building
# takes minutes. Engines are therefore built on the target GPU at start (init container or image entrypoint)
# and cached on a persistent volume under a key made of the GPU name + compute capability + TensorRT version
# + PaCa Serve version. Each plan is built for the batch size its model is served with (max_batch_size in
# the model repository) and named after that batch size, the sha256 of its ONNX file and a hash of the build
# options (PACA_BUILD_ARGS), so a re-exported model, a new batch size or new options (--precision fp16) get a
# new engine, and a restart on the same kind of node starts in seconds.
#
# Replicas share the volume and all run as PID 1 in their containers: every build writes a mktemp file in
# the cache folder and renames it (manifest first, plan last), so no replica ever sees a half-written plan
# and two replicas building the same engine both end with a complete one.
#
# Usage: ensure-engines.sh ONNX_DIR [MODEL ...]
#   MODEL defaults to $PACA_ENGINE_MODELS (space-separated), else every ONNX_DIR/*.onnx except detectors.
# Environment:
#   PACA_ENGINE_CACHE  persistent cache root (default /var/cache/paca/engines)
#   PACA_ENGINE_DIR    where the server reads <model>.plan: symlinks into the cache (default /run/paca/engines)
#   PACA_REPOSITORY    model repository whose max_batch_size each engine is built for
#                      (default /etc/paca/repository.yaml; a model not in it gets PACA_DEFAULT_MAX_BATCH, 8)
#   PACA_BUILD_ARGS    extra arguments for `paca build-engine` (e.g. "--precision fp16")
#   PACA_CACHE, TRITON_CACHE_DIR  timing cache and Triton compile cache; default: on the cache volume, since
#                      the service user's home is read-only in the pod
set -euo pipefail

ONNX_DIR="${1:?usage: ensure-engines.sh ONNX_DIR [MODEL ...]}"
shift
CACHE_ROOT="${PACA_ENGINE_CACHE:-/var/cache/paca/engines}"
ENGINE_DIR="${PACA_ENGINE_DIR:-/run/paca/engines}"
REPOSITORY="${PACA_REPOSITORY:-/etc/paca/repository.yaml}"
PYTHON="${PYTHON:-python3}"
export PACA_CACHE="${PACA_CACHE:-$CACHE_ROOT/build-cache}"
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-$CACHE_ROOT/triton}"

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

# The max_batch_size a model is served with: the repository entry named MODEL or whose artifact is
# MODEL.plan; PACA_DEFAULT_MAX_BATCH (8, the repository default) when there is none.
max_batch() {
    "$PYTHON" - "$REPOSITORY" "$1" "${PACA_DEFAULT_MAX_BATCH:-8}" <<'PY'
import os, sys
path, model, default = sys.argv[1:]
entries = []
if os.path.isfile(path):
    import yaml
    with open(path) as handle:
        entries = (yaml.safe_load(handle) or {}).get("models", [])
for entry in entries:
    artifact = os.path.basename(str(entry.get("artifact", "")))
    if entry.get("name") == model or artifact == f"{model}.plan":
        print(int(entry.get("max_batch_size", 8)))
        break
else:
    print(int(default))
PY
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
mkdir -p "$cache_dir" "$ENGINE_DIR" "$PACA_CACHE" "$TRITON_CACHE_DIR"
log "cache $cache_dir"

tmp=""
trap 'if [ -n "$tmp" ]; then rm -f "$tmp" "$tmp.json"; fi' EXIT

for model in "${models[@]}"; do
    onnx="$ONNX_DIR/$model.onnx"
    [ -f "$onnx" ] || { log "missing $onnx"; exit 1; }
    batch="$(max_batch "$model")"
    opt=$((batch < 8 ? batch : 8))
    sha="$(sha256sum "$onnx" | cut -c1-16)"
    options="$(printf '%s' "${PACA_BUILD_ARGS:-}" | sha256sum | cut -c1-8)"
    plan="$cache_dir/$model.b$batch.$sha.o$options.plan"
    if [ -f "$plan" ] && [ -f "$plan.json" ]; then
        log "$model: cached (max batch $batch)"
    else
        log "$model: building for max batch $batch (minutes)"
        tmp="$(mktemp "$cache_dir/.$model.XXXXXXXX")"
        # shellcheck disable=SC2086  # PACA_BUILD_ARGS is a list of words on purpose
        paca build-engine "$onnx" --output "$tmp" --max-batch "$batch" --opt-batch "$opt" ${PACA_BUILD_ARGS:-}
        # Same folder, so each mv is an atomic rename; the manifest (checked at load) first, the plan last.
        mv -f "$tmp.json" "$plan.json"
        mv -f "$tmp" "$plan"
        tmp=""
    fi
    ln -sfn "$plan" "$ENGINE_DIR/$model.plan"
    ln -sfn "$plan.json" "$ENGINE_DIR/$model.plan.json"
done
log "ready: ${models[*]}"
