"""Optional OpenTelemetry traces: off unless `PACA_TRACING=true`.

When on, every HTTP request gets a SERVER span that continues the caller's W3C `traceparent` (and answers
with its own `traceparent` header), carrying the request id, the model and the status; its children are
the phases of the request line — decode, preprocess, queue, inference, postprocess, encode — from the
intervals the request's `RequestTimings` recorded where the work happened. A batch runs in a `backend batch`
span, child of its first request's span and linked to the others', and a remote backend's call carries
that span's `traceparent` on (`inject`). Spans go to an OTLP/HTTP exporter configured by the standard `OTEL_*` variables
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`, …).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

    from service.timing import RequestTimings

_tracer: Any = None
T = TypeVar("T")


def configure(enabled: bool, exporter: SpanExporter | None = None) -> None:
    """Turn tracing on (with the OTLP exporter, or `exporter` — tests pass an in-memory one) or off."""
    global _tracer
    if not enabled:
        _tracer = None
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                                       "paca-serve")}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _tracer = provider.get_tracer("paca-serve")


def enabled() -> bool:
    return _tracer is not None


def start_request_span(method: str, path: str, headers: Mapping[str, str], request_id: str) -> Span | None:
    """The SERVER span of one HTTP request, child of the caller's `traceparent` when it sent one."""
    if _tracer is None:
        return None
    attributes = {"http.request.method": method, "url.path": path, "paca.request_id": request_id}
    model = _model_of(path)
    if model is not None:
        attributes["paca.model"] = model
    return _server_span(f"{method} {path}", headers, attributes)


def start_rpc_span(method: str, metadata: Mapping[str, str], request_id: str, model: str) -> Span | None:
    """The SERVER span of one gRPC call (the caller's `traceparent` comes as metadata)."""
    if _tracer is None:
        return None
    return _server_span(f"inference.GRPCInferenceService/{method}", metadata, {
        "rpc.system": "grpc", "rpc.method": method, "paca.request_id": request_id, "paca.model": model})


def _server_span(name: str, carrier: Mapping[str, str], attributes: dict[str, Any]) -> Span:
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    return _tracer.start_span(name, context=extract(carrier), kind=SpanKind.SERVER, attributes=attributes)


def traceparent(span: Span) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def end_request_span(span: Span, timings: RequestTimings, *, http_status: int | None = None,
                     grpc_status: str | None = None) -> None:
    """Close the request's span with a child per recorded phase interval; 5xx and server-side gRPC codes
    mark it as an error (a client's mistake does not)."""
    from opentelemetry.trace import Status, StatusCode, set_span_in_context

    if http_status is not None:
        span.set_attribute("http.response.status_code", http_status)
        failed = http_status >= 500
    else:
        span.set_attribute("rpc.grpc.status_code", grpc_status or "OK")
        failed = grpc_status in _GRPC_SERVER_ERRORS
    if failed:
        span.set_status(Status(StatusCode.ERROR))
    parent = set_span_in_context(span)
    for phase, start_ns, end_ns in timings.intervals:
        _tracer.start_span(phase, context=parent, start_time=start_ns).end(end_time=end_ns)
    span.end()


def run_in_batch_span(requests: Sequence[Any], attributes: Mapping[str, Any], work: Callable[..., T],
                      *args: Any) -> T:
    """Worker thread: run one batch's backend call inside a span for the batch (`requests`: the span contexts
    of the traced requests in it; the first is the parent, all are linked)."""
    from opentelemetry import trace
    from opentelemetry.trace import Link, NonRecordingSpan

    parent = trace.set_span_in_context(NonRecordingSpan(requests[0]))
    span = _tracer.start_span("backend batch", context=parent, links=[Link(context) for context in requests],
                              attributes=dict(attributes))
    with trace.use_span(span, end_on_exit=True):
        return work(*args)


def inject(headers: MutableMapping[str, str]) -> None:
    """Carry the current trace on to an outgoing request (the remote backend)."""
    if _tracer is not None:
        from opentelemetry.propagate import inject as otel_inject

        otel_inject(headers)


_GRPC_SERVER_ERRORS = frozenset({"INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "DATA_LOSS",
                                 "UNIMPLEMENTED"})


def _model_of(path: str) -> str | None:
    parts = path.strip("/").split("/")
    return parts[2] if len(parts) >= 3 and parts[0] in ("v1", "v2") and parts[1] == "models" else None
