"""OpenTelemetry traces (PACA_TRACING): a SERVER span per request that continues the caller's `traceparent`
and answers with its own, a child span per phase of the request line, a batch span linked to every request
it served, and the trace carried on to a remote backend; the OTLP exporter configured by `OTEL_*` alone."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import grpc
import httpx
import numpy as np
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from service import tracing
from service.app import create_app
from service.grpc_gen import grpc_service_pb2 as pb
from service.grpc_gen import grpc_service_pb2_grpc as pb_grpc
from service.repository import load_repository
from service.settings import ServerSettings
from tests.support import images
from tests.support.fixture_models import CLASSIFIER, DETECTOR, repository_dict
from tests.support.server import free_port, running_server, serving_in_process

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
REQUEST_PHASES = {"decode", "preprocess", "queue", "inference", "postprocess", "encode"}


@pytest.fixture()
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    tracing.configure(True, exporter=memory)
    yield memory
    tracing.configure(False)


def _app(artifacts_dir: Path, tmp_path: Path, repository: dict, tracing_on: bool = True, grpc_port: int = 0):
    config = tmp_path / "repository.yaml"
    config.write_text(yaml.safe_dump(repository))
    settings = ServerSettings(config=config, grpc_port=grpc_port, tracing=tracing_on)
    return create_app(settings, load_repository(config))


def test_request_spans_continue_the_callers_trace(exporter, artifacts_dir: Path, tmp_path: Path) -> None:
    app = _app(artifacts_dir, tmp_path, repository_dict(artifacts_dir))
    with serving_in_process(app) as url:
        exporter.clear()
        response = httpx.post(f"{url}/v1/models/{CLASSIFIER}/classify", files={"image": images.png(3)},
                              headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
                                       "X-Request-ID": "trace-me-1"}, timeout=60)
        assert response.status_code == 200
        version, trace_id, span_id, flags = response.headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", CALLER_TRACE, "01") and span_id != CALLER_SPAN
        bad = httpx.post(f"{url}/v1/models/{CLASSIFIER}/classify", content=b"not an image", timeout=60,
                         headers={"Content-Type": "application/octet-stream"})
        assert bad.status_code == 400 and "traceparent" in bad.headers

    spans = exporter.get_finished_spans()
    server_span = next(s for s in spans if s.attributes.get("paca.request_id") == "trace-me-1")
    assert server_span.kind == SpanKind.SERVER
    assert server_span.parent.span_id == int(CALLER_SPAN, 16)
    assert f"{server_span.context.span_id:016x}" == span_id
    assert server_span.attributes["paca.model"] == CLASSIFIER
    assert server_span.attributes["http.response.status_code"] == 200
    children = [s for s in spans if s.parent is not None and s.parent.span_id == server_span.context.span_id]
    assert {s.name for s in children} >= REQUEST_PHASES
    for child in children:  # every phase lies inside the request's span, in the caller's trace
        assert child.context.trace_id == int(CALLER_TRACE, 16)
        assert server_span.start_time <= child.start_time <= child.end_time <= server_span.end_time
    by_name = {s.name: s for s in children}
    assert by_name["queue"].end_time <= by_name["inference"].start_time + 1_000_000
    batch = next(s for s in spans if s.name == "backend batch" and
                 any(link.context.span_id == server_span.context.span_id for link in s.links))
    assert batch.attributes["paca.model"] == CLASSIFIER and batch.attributes["paca.batch.samples"] == 1

    bad_span = next(s for s in spans if s.kind == SpanKind.SERVER and
                    s.attributes.get("http.response.status_code") == 400)
    assert bad_span.parent is None  # no traceparent sent: a new trace
    assert bad_span.status.status_code != StatusCode.ERROR  # a client's mistake is not the server's error


def test_one_batch_span_links_every_request_it_served(exporter, artifacts_dir: Path, tmp_path: Path) -> None:
    repository = repository_dict(artifacts_dir, **{CLASSIFIER: {"batching": {"max_queue_delay_ms": 200,
                                                                            "policy": "delay"}}})
    app = _app(artifacts_dir, tmp_path, repository)

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            return list(await asyncio.gather(*(
                http.post(f"/v1/models/{CLASSIFIER}/classify", files={"image": images.png(40 + i)},
                          headers={"X-Request-ID": f"burst-{i}"}) for i in range(4))))

    with serving_in_process(app) as url:
        exporter.clear()
        assert all(r.status_code == 200 for r in asyncio.run(burst(url)))
    spans = exporter.get_finished_spans()
    requests = {s.context.span_id: s for s in spans if str(s.attributes.get("paca.request_id", "")).startswith(
        "burst-")}
    assert len(requests) == 4
    batches = [s for s in spans if s.name == "backend batch"]
    linked = [link.context.span_id for batch in batches for link in batch.links]
    assert sorted(linked) == sorted(requests)  # each request in exactly one batch
    assert any(batch.attributes["paca.batch.requests"] > 1 for batch in batches)
    for batch in batches:  # the parent is the first request it served, so the batch shows in that trace
        assert batch.parent.span_id == batch.links[0].context.span_id


def test_grpc_calls_continue_the_callers_trace(exporter, artifacts_dir: Path, tmp_path: Path) -> None:
    grpc_port = free_port()
    app = _app(artifacts_dir, tmp_path, repository_dict(artifacts_dir), grpc_port=grpc_port)
    pixels = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    request = pb.ModelInferRequest(model_name=CLASSIFIER, id="grpc-trace", inputs=[
        pb.ModelInferRequest.InferInputTensor(name="pixel_values", datatype="FP32", shape=[1, 3, 32, 32])],
        raw_input_contents=[pixels.tobytes()])
    with serving_in_process(app), grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        exporter.clear()
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        _, call = stub.ModelInfer.with_call(request, metadata=[("traceparent",
                                                                f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")])
        answered = dict(call.initial_metadata())["traceparent"]
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(pb.ModelInferRequest(model_name="no-such-model"))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    spans = exporter.get_finished_spans()
    rpc = next(s for s in spans if s.attributes.get("paca.request_id") == "grpc-trace")
    assert rpc.name == "inference.GRPCInferenceService/ModelInfer" and rpc.kind == SpanKind.SERVER
    assert rpc.parent.span_id == int(CALLER_SPAN, 16) and rpc.attributes["rpc.grpc.status_code"] == "OK"
    assert answered == f"00-{CALLER_TRACE}-{rpc.context.span_id:016x}-01"
    phases = {s.name for s in spans if s.parent is not None and s.parent.span_id == rpc.context.span_id}
    assert {"queue", "inference"} <= phases
    missing = next(s for s in spans if s.attributes.get("paca.model") == "no-such-model")
    assert missing.attributes["rpc.grpc.status_code"] == "NOT_FOUND"
    assert missing.status.status_code != StatusCode.ERROR


def test_tracing_off_adds_nothing(artifacts_dir: Path, tmp_path: Path) -> None:
    memory = InMemorySpanExporter()
    tracing.configure(True, exporter=memory)
    try:
        app = _app(artifacts_dir, tmp_path, repository_dict(artifacts_dir), tracing_on=False)
        with serving_in_process(app) as url:
            response = httpx.post(f"{url}/v1/models/{CLASSIFIER}/classify", files={"image": images.png(3)},
                                  headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}, timeout=60)
        assert response.status_code == 200 and "traceparent" not in response.headers
        assert memory.get_finished_spans() == ()
    finally:
        tracing.configure(False)


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: keeps every exported span (protobuf bodies, as the SDK exporter sends)."""

    spans: ClassVar[list] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes
                           if a.key == "service.name")
            for scope_spans in resource_spans.scope_spans:
                _Collector.spans.extend((service, span) for span in scope_spans.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def collector() -> Iterator[str]:
    _Collector.spans = []
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{receiver.server_address[1]}"
    receiver.shutdown()


def test_otlp_export_and_propagation_to_a_remote_backend(collector: str, artifacts_dir: Path,
                                                         tmp_path: Path) -> None:
    """Two `paca serve` processes, configured only by environment variables: the front serves a model whose
    backend is the origin (v2 over HTTP); one client request gives one trace across both servers."""
    def env(name: str) -> dict[str, str]:
        return {"PACA_TRACING": "true", "OTEL_SERVICE_NAME": name, "OTEL_EXPORTER_OTLP_ENDPOINT": collector,
                "OTEL_BSP_SCHEDULE_DELAY": "100"}

    (tmp_path / "origin").mkdir()
    (tmp_path / "front").mkdir()
    with running_server(tmp_path / "origin", repository_dict(artifacts_dir), env=env("origin")) as origin:
        front_repository = {"models": [{"name": "remote-det", "backend": "triton", "max_batch_size": 1,
                                        "options": {"url": origin.url, "model": DETECTOR},
                                        "warmup": {"image_sizes": [[120, 160]]}}]}
        with running_server(tmp_path / "front", front_repository, env=env("front")) as front:
            response = httpx.post(f"{front.url}/v1/models/remote-det/detect", files={"image": images.png(5)},
                                  headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}, timeout=60)
            assert response.status_code == 200
            for _ in range(100):  # the batch processor exports every 100 ms
                if any(service == "origin" and span.trace_id.hex() == CALLER_TRACE
                       for service, span in _Collector.spans):
                    break
                threading.Event().wait(0.1)
    traced = [(service, span) for service, span in _Collector.spans if span.trace_id.hex() == CALLER_TRACE]
    front_request = next(span for service, span in traced if service == "front" and span.name.startswith("POST"))
    assert front_request.parent_span_id.hex() == CALLER_SPAN
    batch = next(span for service, span in traced if service == "front" and span.name == "backend batch")
    origin_request = next(span for service, span in traced if service == "origin" and span.name.startswith("POST"))
    assert origin_request.name == f"POST /v2/models/{DETECTOR}/infer"
    assert origin_request.parent_span_id == batch.span_id  # the remote call continues the batch's span
    origin_phases = {span.name for service, span in traced if service == "origin"
                     and span.parent_span_id == origin_request.span_id}
    assert {"queue", "inference", "encode"} <= origin_phases
