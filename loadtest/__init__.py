"""Load testing PaCa Serve: `paca loadtest` (sweeps, plots, SLO gates) and `paca bench` (benchmark scripts).

locust (`locustfile.py`, `run.py`) and Triton's perf_analyzer (`perf_analyzer.py`, `perf_input.py`) stay
available as stand-alone scripts; they run from the tools venv and need nothing from this package.
"""
