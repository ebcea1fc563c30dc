"""The Grafana dashboard and the compose monitoring stack, checked without Docker.

Every PromQL expression of the dashboard is parsed by a real PromQL parser (promql-parser, the Rust parser of
GreptimeDB) after Grafana's variables are substituted, and the metric names it selects are collected;
tests/loadtest/test_dashboard_metrics.py checks those against a live server's /metrics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from tests.support.paths import REPO_ROOT

GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "paca-serve.json"
COMPOSE = REPO_ROOT / "docker-compose.yml"
# Grafana's variables, replaced by values of the right kind so that the parser sees plain PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$model": "m",
                     "$instance": "i", "${datasource}": "ds"}
REQUIRED_FAMILIES = {
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_pending_request_count",
    "nv_inference_queue_duration_us", "nv_inference_count", "nv_inference_exec_count",
    "paca_request_duration_seconds_bucket", "paca_request_duration_seconds_count", "paca_request_duration_seconds_sum",
    "paca_queue_duration_seconds_bucket", "paca_batch_size_bucket",
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
    "paca_request_phase_seconds_sum", "paca_request_phase_seconds_count", "paca_inflight_requests",
}


SERVER_WIDE = {"paca_inflight_requests", "paca_inflight_memory_bytes"}  # per server, no model label


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and the template variables' label_values() queries."""
    found = [t["expr"] for p in panels(dashboard) for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
            assert match, variable["query"]
            found.append(match.group(1))
    return found


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def selectors(expr: str) -> list[Any]:
    """The vector selectors of a PromQL expression (parsed, so a syntax error fails here)."""
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
            return
        for attribute in ("expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, attribute, None)
            if child is not None and not isinstance(child, (str, int, float)):
                visit(child)
        for child in getattr(node, "args", None) or []:
            visit(child)

    visit(promql_parser.parse(substitute(expr)))
    return found


def queried_metrics(dashboard: dict[str, Any] | None = None) -> set[str]:
    return {s.name for expr in expressions(dashboard or load_dashboard()) for s in selectors(expr)}


def test_every_expression_parses_and_the_metrics_cover_what_the_issue_asks() -> None:
    dashboard = load_dashboard()
    for expr in expressions(dashboard):
        assert selectors(expr), expr  # parses, and selects something
    assert queried_metrics(dashboard) >= REQUIRED_FAMILIES
    with pytest.raises(ValueError):  # the parser is strict: a broken expression would fail above
        promql_parser.parse("sum by (model (rate(x[1m]))")


def test_every_server_selector_is_filtered_by_the_dashboard_variables() -> None:
    for expr in (t["expr"] for p in panels(load_dashboard()) for t in p["targets"]):
        for selector in selectors(expr):
            text = str(selector)
            if selector.name.startswith(("nv_", "paca_")) and selector.name not in SERVER_WIDE:
                assert 'model=~"m"' in text and 'instance=~"i"' in text, expr
            if selector.name.startswith("process_") or selector.name in SERVER_WIDE:
                assert 'instance=~"i"' in text, expr  # only the servers' processes, not every scraped job


def test_panels_cover_traffic_latency_queue_batching_load_and_process() -> None:
    dashboard = load_dashboard()
    titles = [p["title"] for p in panels(dashboard)]
    for needed in ("Request rate", "Failures", "Success ratio", "latency p50 / p90 / p99", "Queue time",
                   "queue vs compute", "Batch size distribution", "Mean batch size", "Queue depth", "In flight",
                   "by phase", "CPU", "Resident memory", "Open file descriptors"):
        assert any(needed in title for title in titles), needed
    heatmap = next(p for p in panels(dashboard) if p["type"] == "heatmap")
    assert heatmap["targets"][0]["format"] == "heatmap" and "paca_batch_size_bucket" in heatmap["targets"][0]["expr"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"] and panel["fieldConfig"]["defaults"]["unit"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["refId"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in load_dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_template_variables() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("model", "instance"):
        assert variables[name]["multi"] and variables[name]["includeAll"]
        # No allValue: "All" expands to the listed values, so process_* of unrelated jobs stay out.
        assert "allValue" not in variables[name]
        assert "nv_inference_request_success" in variables[name]["query"]["query"]


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path (relative to the repository), for bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        mounts[container] = host
    return mounts


def test_compose_monitoring_profile_wires_server_prometheus_and_grafana() -> None:
    services = _compose()["services"]
    server, prometheus, grafana = services["server"], services["prometheus"], services["grafana"]
    assert "profiles" not in server  # `docker compose --profile monitoring up` starts it too
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"]
    # Prometheus scrapes the server service on its HTTP port.
    prometheus_config = REPO_ROOT / _mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    scrape = yaml.safe_load(prometheus_config.read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["static_configs"][0]["targets"] == ["server:8000"]
    assert "8000:8000" in server["ports"]
    # Grafana: provisioning mounted where Grafana reads it, the data source pointing at the prometheus service.
    grafana_mounts = _mounts(grafana)
    provisioning = REPO_ROOT / grafana_mounts["/etc/grafana/provisioning"]
    assert provisioning == GRAFANA / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "9090:9090" in prometheus["ports"] and source["isDefault"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "paca-serve.yaml").read_text())["providers"]
    dashboards_path = provider["options"]["path"]
    assert REPO_ROOT / grafana_mounts[dashboards_path] == DASHBOARD.parent
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(dashboards_path) and Path(home).name == DASHBOARD.name
    assert grafana["image"].startswith("grafana/grafana:") and not grafana["image"].endswith(":latest")
    assert grafana["depends_on"] == ["prometheus"]
