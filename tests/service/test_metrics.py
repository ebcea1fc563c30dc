"""Prometheus text of the Triton-named counters (service.metrics)."""

from __future__ import annotations

from service.metrics import render_triton
from service.stats import ModelStats


def test_triton_metrics_text_has_exact_names_and_labels() -> None:
    stats = ModelStats("m", "1")
    stats.record_queue(2_000)
    stats.record_execution(batch_size=4, requests=2, input_ns=1_000, infer_ns=9_000, output_ns=1_000)
    stats.record_success(50_000)
    stats.record_failure(1_000, "REJECTED")
    text = render_triton([stats])
    lines = set(text.splitlines())
    assert "# TYPE nv_inference_count counter" in lines
    assert 'nv_inference_count{model="m",version="1"} 4' in lines
    assert 'nv_inference_exec_count{model="m",version="1"} 1' in lines
    assert 'nv_inference_request_success{model="m",version="1"} 1' in lines
    assert 'nv_inference_request_failure{model="m",version="1",reason="REJECTED"} 1' in lines
    assert 'nv_inference_compute_infer_duration_us{model="m",version="1"} 18' in lines  # 2 requests × 9 µs
    assert 'nv_inference_request_duration_us{model="m",version="1"} 51' in lines
    assert not any("_total" in line for line in lines)
