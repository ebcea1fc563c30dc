"""Hostile and careless input against a real server: every field of a v2 request checked by type, degenerate
image geometry, deep JSON, bodies over the limit (chunked too), per-request budgets, memory, slow clients.

Every refusal is a 4xx JSON `{"error", "request_id"}` that names the problem and carries `X-Request-ID`.
"""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.fixture_models import CLASSIFIER, DETECTOR, SEGMENTER, repository_dict
from tests.support.server import ServerProcess, running_server

LIMITS = {"PACA_BODY_TIMEOUT_S": "2", "PACA_HEADER_TIMEOUT_S": "1", "PACA_MAX_REQUEST_BYTES": str(8 << 20)}
PIXELS = np.zeros((1, 3, 32, 32), np.float32).ravel().tolist()
GOOD = {"name": "pixel_values", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": PIXELS}


@pytest.fixture(scope="module")
def strict_server(artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("limits"), repository_dict(artifacts_dir), env=LIMITS) as server:
        yield server


def assert_refused(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "request_id"} and body["request_id"] == response.headers["x-request-id"]
    for word in words:
        assert word in body["error"], (word, body["error"])


def png(width: int, height: int, value: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


V2_PROBES = {
    "parameters as a list": ({"inputs": [GOOD], "parameters": [1, 2]}, "'parameters' must be an object"),
    "parameters as a string": ({"inputs": [GOOD], "parameters": "fast"}, "'parameters' must be an object"),
    "input parameters as a list": ({"inputs": [{**GOOD, "parameters": [1]}]}, "'parameters' must be an object"),
    "outputs as an object": ({"inputs": [GOOD], "outputs": {"name": "logits"}}, "'outputs' must be a list"),
    "outputs as a string": ({"inputs": [GOOD], "outputs": "logits"}, "'outputs' must be a list"),
    "output parameters as a string": ({"inputs": [GOOD], "outputs": [{"name": "logits", "parameters": "x"}]},
                                      "'parameters' must be an object"),
    "an unknown output": ({"inputs": [GOOD], "outputs": [{"name": "nope"}]}, "no output 'nope'"),
    "an input that is not an object": ({"inputs": [5]}, "inputs[0] must be an object"),
    "inputs as an object": ({"inputs": GOOD}, "'inputs' must be a non-empty list"),
    "a duplicated input name": ({"inputs": [GOOD, GOOD]}, "given twice"),
    "a zero batch": ({"inputs": [{**GOOD, "shape": [0, 3, 32, 32], "data": []}]}, "batch 0"),
    "a boolean in the shape": ({"inputs": [{**GOOD, "shape": [True, 3, 32, 32]}]}, "non-negative integers"),
    "a negative dimension": ({"inputs": [{**GOOD, "shape": [1, -3, 32, 32]}]}, "non-negative integers"),
    "a float dimension": ({"inputs": [{**GOOD, "shape": [1, 3.0, 32, 32]}]}, "non-negative integers"),
    "a shape whose product overflows int64": ({"inputs": [{**GOOD, "shape": [2**62, 2**62, 3, 32]}]},
                                              "max_batch_size"),
    "too many dimensions": ({"inputs": [{**GOOD, "shape": [1] * 20}]}, "at most 8"),
    "a numeric id": ({"inputs": [GOOD], "id": 5}, "'id' must be a string"),
    "binary_data_size as a boolean": ({"inputs": [{**GOOD, "parameters": {"binary_data_size": True}}]},
                                      "binary_data_size"),
    "classification as a boolean": ({"inputs": [GOOD], "outputs": [{"name": "logits",
                                                                    "parameters": {"classification": True}}]},
                                    "must be an integer"),
    "data as an object": ({"inputs": [{**GOOD, "data": {"a": 1}}]}, "not a (nested) list of numbers"),
    "ragged nested data": ({"inputs": [{**GOOD, "data": [[1, 2], [3]]}]}, "not a (nested) list of numbers"),
    "too few values": ({"inputs": [{**GOOD, "data": [0.0] * 10}]}, "10 values"),
    "a string timeout": ({"inputs": [GOOD], "parameters": {"timeout": "soon"}}, "'timeout'"),
    "a wrong datatype": ({"inputs": [{**GOOD, "datatype": "INT8"}]}, "must be FP32"),
    "an unknown datatype": ({"inputs": [{**GOOD, "datatype": "FP128"}]}, "unsupported datatype"),
    "BYTES that are not base64": ({"inputs": [{"name": "img", "shape": [1], "datatype": "BYTES",
                                               "data": ["%%%"]}]}, "not valid base64"),
}


@pytest.mark.parametrize("probe", sorted(V2_PROBES))
def test_every_v2_field_is_checked_by_type(strict_server: ServerProcess, probe: str) -> None:
    body, words = V2_PROBES[probe]
    response = httpx.post(f"{strict_server.url}/v2/models/{CLASSIFIER}/infer", json=body, timeout=30)
    assert_refused(response, 400, words)


def test_v2_binary_and_shape_limits_refuse_before_allocating(strict_server: ServerProcess) -> None:
    url = strict_server.url
    header = json.dumps({"inputs": [{"name": "pixel_values", "shape": [2**40, 2**40, 3, 3], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 16}}]}).encode()
    response = httpx.post(f"{url}/v2/models/{CLASSIFIER}/infer", content=header + bytes(16),
                          headers={"Inference-Header-Content-Length": str(len(header))}, timeout=30)
    assert_refused(response, 400, "max_batch_size")
    empty = {"inputs": [{"name": "pixel_values", "shape": [1, 3, 0, 0], "datatype": "FP32", "data": []}]}
    assert_refused(httpx.post(f"{url}/v2/models/{SEGMENTER}/infer", json=empty, timeout=30), 400, "axis 2 is 0")
    huge = {"inputs": [{"name": "pixel_values", "shape": [1, 3, 100000, 100000], "datatype": "FP32", "data": []}]}
    assert_refused(httpx.post(f"{url}/v2/models/{SEGMENTER}/infer", json=huge, timeout=30), 400, "1 to 128")
    unknown = httpx.post(f"{url}/v2/models/{CLASSIFIER}/versions/9/infer", json={"inputs": [GOOD]}, timeout=30)
    assert_refused(unknown, 404, "no version '9'")


def test_deeply_nested_json_is_refused_on_v1_and_v2(strict_server: ServerProcess) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    json_headers = {"content-type": "application/json"}
    response = httpx.post(f"{strict_server.url}/v2/models/{CLASSIFIER}/infer", content=deep, headers=json_headers,
                          timeout=30)
    assert_refused(response, 400, "depth limit")
    response = httpx.post(f"{strict_server.url}/v1/models/{CLASSIFIER}/classify", content=deep, headers=json_headers,
                          timeout=30)
    assert_refused(response, 400, "depth limit")


DEGENERATE = [(1, 50), (50, 1), (2, 2), (300, 1), (1, 300), (8000, 1), (4000, 3)]


@pytest.mark.parametrize(("width", "height"), DEGENERATE)
def test_degenerate_images_get_an_answer_or_a_400_naming_the_aspect_ratio(strict_server: ServerProcess, width: int,
                                                                          height: int) -> None:
    data = png(width, height)
    for model, verb in ((CLASSIFIER, "classify"), (DETECTOR, "detect"), (SEGMENTER, "segment")):
        response = httpx.post(f"{strict_server.url}/v1/models/{model}/{verb}", files={"image": data}, timeout=60)
        if max(width, height) / min(width, height) > 64:
            assert_refused(response, 400, f"{width}×{height}", "aspect ratio", "64:1")
        else:
            assert response.status_code == 200, response.text
            if verb == "segment":
                result = response.json()["results"][0]
                assert (result["width"], result["height"]) == (width, height)


def test_degenerate_images_are_answered_when_the_aspect_limit_allows_them(artifacts_dir: Path,
                                                                          tmp_path: Path) -> None:
    """With the limit lifted, the thinnest images preprocess (no 0-pixel resize, no giant intermediate)."""
    with running_server(tmp_path, repository_dict(artifacts_dir), env={"PACA_MAX_ASPECT_RATIO": "100000"}) as server:
        for width, height in DEGENERATE:
            data = png(width, height)
            for model, verb in ((CLASSIFIER, "classify"), (DETECTOR, "detect"), (SEGMENTER, "segment")):
                response = httpx.post(f"{server.url}/v1/models/{model}/{verb}", files={"image": data}, timeout=60)
                assert response.status_code == 200, (width, height, verb, response.text)
            segmented = httpx.post(f"{server.url}/v1/models/{SEGMENTER}/segment", files={"image": data},
                                   headers={"Accept": "image/png"}, timeout=60)
            assert Image.open(io.BytesIO(segmented.content)).size == (width, height)


def _chunked_multipart(total: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    yield (b'--B\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
           b"Content-Type: image/png\r\n\r\n")
    for _ in range(total // chunk):
        yield bytes(chunk)
    yield b"\r\n--B--\r\n"


def test_bodies_over_the_limit_are_413_even_when_chunked(strict_server: ServerProcess) -> None:
    url = f"{strict_server.url}/v1/models/{CLASSIFIER}/classify"
    chunked = httpx.post(url, content=_chunked_multipart(64 << 20), timeout=60,
                         headers={"content-type": "multipart/form-data; boundary=B"})
    assert_refused(chunked, 413, "exceeds the limit of 8388608 bytes")
    raw = httpx.post(url, content=iter([bytes(1 << 20)] * 12), headers={"content-type": "image/png"}, timeout=60)
    assert_refused(raw, 413, "exceeds the limit")
    declared = httpx.post(url, content=bytes(9 << 20), headers={"content-type": "image/png"}, timeout=60)
    assert_refused(declared, 413, "exceeds the limit")


def test_multipart_with_too_many_parts_is_refused(strict_server: ServerProcess) -> None:
    files = [("image", ("a.png", png(8, 8)))] * 70
    response = httpx.post(f"{strict_server.url}/v1/models/{CLASSIFIER}/classify", files=files, timeout=60)
    assert_refused(response, 400, "malformed multipart body", "Too many files")
    fields = {f"f{i}": "x" for i in range(150)}
    response = httpx.post(f"{strict_server.url}/v1/models/{CLASSIFIER}/classify", data=fields,
                          files={"image": png(8, 8)}, timeout=60)
    assert_refused(response, 400, "Too many fields")


def test_request_budgets_refuse_before_decoding(strict_server: ServerProcess) -> None:
    big = _sparse_png(6000, 6000)
    url = f"{strict_server.url}/v1/models/{SEGMENTER}/segment"
    assert_refused(httpx.post(url, files=[("image", big)] * 3, timeout=60), 413, "pixels together",
                   "limit is 50000000")
    too_large = _sparse_png(7000, 6000)
    assert_refused(httpx.post(url, files={"image": too_large}, timeout=60), 413, "7000×6000", "limit is 40000000")
    b64 = {"images": [{"b64": ""}] * 65}
    assert_refused(httpx.post(url, json=b64, timeout=60), 400, "65 images", "limit is 64")
    bytes_tensor = {"inputs": [{"name": "img", "shape": [9], "datatype": "BYTES", "data": ["aGk="] * 9}]}
    response = httpx.post(f"{strict_server.url}/v2/models/{CLASSIFIER}/infer", json=bytes_tensor, timeout=60)
    assert_refused(response, 400, "9 images exceed", "max_batch_size 8")


def _sparse_png(width: int, height: int) -> bytes:
    """A large image in a small file (~120 KB for 6000×6000): what a decompression-bomb-style upload looks like."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[::7, ::5] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def test_the_largest_admitted_request_stays_within_its_memory_budget(strict_server: ServerProcess) -> None:
    """One 36-megapixel image (the most one request may hold with a single image under 40 M pixels) through
    every task: the server's peak RSS grows by less than 1.5 GB."""
    before = _rss_kib(strict_server.process.pid)
    big = _sparse_png(6000, 6000)
    for model, verb in ((CLASSIFIER, "classify"), (DETECTOR, "detect"), (SEGMENTER, "segment"),
                        (CLASSIFIER, "explain")):
        response = httpx.post(f"{strict_server.url}/v1/models/{model}/{verb}", files={"image": big}, timeout=180)
        assert response.status_code == 200, (verb, response.text)
    after = _rss_kib(strict_server.process.pid)
    growth_mib = (after["VmHWM"] - before["VmRSS"]) / 1024
    print(f"peak RSS growth: {growth_mib:.0f} MiB (RSS {before['VmRSS'] // 1024} → {after['VmRSS'] // 1024} MiB)")
    assert growth_mib < 1536


def test_slow_clients_are_cut_off(strict_server: ServerProcess) -> None:
    host, port = strict_server.url.removeprefix("http://").split(":")
    # Headers that never finish, and a connection that never says anything: 408 and closed.
    for opening in (b"POST /v1/models/x/classify HTTP/1.1\r\nHost: x\r\n", b""):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(opening)
            sock.settimeout(20)  # the server must answer and close well before this
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive in time" in answer
    # A body trickled one byte at a time: 408 once the body deadline passes, without waiting for the rest.
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"POST /v1/models/{CLASSIFIER}/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     "Content-Length: 100000\r\n\r\n".encode())
        sock.settimeout(0.2)
        answer, started = b"", time.monotonic()
        while not answer and time.monotonic() - started < 30:
            sock.sendall(b"x")
            try:
                answer = sock.recv(4000)
            except TimeoutError:
                continue
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"did not arrive within 2 s" in answer and b"x-request-id" in answer.lower()
