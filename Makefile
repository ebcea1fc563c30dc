# PaCa Serve — every target does its own set-up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
TOOLS_VENV := .venv-tools
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS_STAMP := $(TOOLS_VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
GRPC_PORT ?= 8001
# paca loadtest sweep of `make loadtest-report` (a running server: make run in another terminal)
LOADTEST_ARGS ?= --concurrency 1,4,16 --duration 20
LOADTEST_OUT ?= loadtest-results

.PHONY: help setup tools run test lint demo-models loadtest loadtest-report clean gpu-check

help:
	@echo "make run    - set up .venv and serve the demo models on http://$(HOST):$(PORT) (gRPC $(HOST):$(GRPC_PORT))"
	@echo "make test   - set up .venv (+ .venv-tools for protocol clients) and run the test suite"
	@echo "make lint   - ruff"
	@echo "make loadtest - locust against a running server (make run in another terminal)"
	@echo "make loadtest-report - paca loadtest sweep with plots into $(LOADTEST_OUT)/ (LOADTEST_ARGS=...)"

$(STAMP): requirements.txt requirements-demo.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-demo.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# Protocol clients and load tools conflict with the main pins (tritonclient downgrades protobuf); the
# Triton peer (PyTriton) pins numpy 1.26: each gets its own venv.
$(TOOLS_STAMP): requirements-tools.txt requirements-peers.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install -q -r requirements-tools.txt
	bash scripts/install-perf-analyzer.sh $(TOOLS_VENV) || echo "perf_analyzer not installed; its tests will skip"
	$(PYTHON) -m venv tools/venv-pytriton
	tools/venv-pytriton/bin/python -m pip install -q -r requirements-peers.txt || echo "PyTriton not installed; its tests will skip"
	touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP)

demo-models: $(STAMP)
	$(VENV)/bin/paca demo ensure

run: $(STAMP) demo-models
	$(VENV)/bin/paca serve --host $(HOST) --port $(PORT) --grpc-port $(GRPC_PORT)

test: $(STAMP) $(TOOLS_STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

loadtest: $(STAMP) $(TOOLS_STAMP)
	$(TOOLS_VENV)/bin/python loadtest/run.py --host http://$(HOST):$(PORT) --users 4 --duration 30

loadtest-report: $(STAMP)
	$(VENV)/bin/paca loadtest --url http://$(HOST):$(PORT) --grpc-target $(HOST):$(GRPC_PORT) $(LOADTEST_ARGS) \
		--output $(LOADTEST_OUT)

gpu-check:
	bash scripts/gpu-check.sh

clean:
	rm -rf $(VENV) $(TOOLS_VENV) build *.egg-info
