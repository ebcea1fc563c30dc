"""Fuzzing: Hypothesis drives the v2 request parser with arbitrary JSON (no exception but a 4xx escapes), and
schemathesis drives the running server from its own OpenAPI schema (no 5xx on anything it generates)."""

from __future__ import annotations

import json
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import ServiceError
from service.v2.codec import decode_grpc, decode_http
from tests.support.paths import REPO_ROOT
from tests.support.server import TOOLS_PYTHON

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False), st.text(max_size=8))
JSON = st.recursive(SCALARS, lambda children: st.one_of(st.lists(children, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), children, max_size=4)),
                    max_leaves=30)
FIELDS = st.sampled_from(["inputs", "outputs", "parameters", "id", "name", "shape", "datatype", "data",
                          "binary_data_size", "binary_data", "classification", "timeout", "binary_data_output"])
# Requests shaped like v2 requests, with every field possibly of the wrong type.
TENSORISH = st.dictionaries(FIELDS, JSON, max_size=6)
REQUESTS = st.fixed_dictionaries({}, optional={
    "inputs": st.one_of(JSON, st.lists(st.one_of(TENSORISH, JSON), max_size=3)),
    "outputs": st.one_of(JSON, st.lists(st.one_of(TENSORISH, JSON), max_size=3)),
    "parameters": st.one_of(JSON, TENSORISH),
    "id": JSON,
})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=REQUESTS, binary=st.binary(max_size=64), header_length=st.one_of(st.none(), st.integers(-5, 400)))
def test_the_http_parser_only_ever_raises_client_errors(request, binary, header_length) -> None:
    header = json.dumps(request).encode()
    body = header + binary
    length = None if header_length is None else str(header_length)
    try:
        decoded = decode_http(body, length)
    except ServiceError as exc:
        assert 400 <= exc.status_code < 500, exc
        return
    for tensor in decoded.inputs:  # what the parser accepted can be turned into arrays or refused cleanly
        if tensor.elements is None:
            try:
                tensor.array()
            except ServiceError as exc:
                assert exc.status_code == 400


@settings(max_examples=200, deadline=None)
@given(names=st.lists(st.text(max_size=5), max_size=3), shapes=st.lists(st.lists(st.integers(-3, 5), max_size=5),
                                                                         max_size=3),
       datatypes=st.lists(st.sampled_from(["FP32", "BYTES", "INT64", "FP16", "NOPE", ""]), max_size=3),
       raw=st.lists(st.binary(max_size=40), max_size=3))
def test_the_grpc_parser_only_ever_raises_client_errors(names, shapes, datatypes, raw) -> None:
    from service.grpc_gen import grpc_service_pb2 as pb

    message = pb.ModelInferRequest(model_name="m")
    for name, shape, datatype in zip(names, shapes, datatypes, strict=False):
        tensor = message.inputs.add()
        tensor.name, tensor.datatype = name, datatype
        tensor.shape.extend(shape)
    message.raw_input_contents.extend(raw)
    try:
        decode_grpc(message)
    except ServiceError as exc:
        assert 400 <= exc.status_code < 500


def test_schemathesis_finds_no_server_error(server, tmp_path) -> None:
    """schemathesis (tools venv) against the live OpenAPI schema: a bounded run, only the no-5xx check."""
    if not TOOLS_PYTHON.exists():
        pytest.skip(".venv-tools is not installed (make tools)")
    schemathesis = TOOLS_PYTHON.parent / "schemathesis"
    if not schemathesis.exists():
        pytest.skip("schemathesis is not installed in .venv-tools (make tools)")
    result = subprocess.run(
        [str(schemathesis), "--config-file", str(REPO_ROOT / "tests" / "support" / "schemathesis.toml"), "run",
         f"{server.url}/openapi.json", "--checks",
         "not_a_server_error,response_schema_conformance,status_code_conformance",
         "--max-examples", "12", "--workers", "1", "--seed", "1", "--request-timeout", "30",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Test cases:" in output and "generated" in output  # it really ran examples
