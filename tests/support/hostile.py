"""The catalogue of hostile and careless requests, with the answer each must get.

One list serves two readers: `tests/service/test_limits.py` sends every probe to a real server and asserts the
answer, and `scripts/reliability_table.py` sends the same probes and prints what it observed as the table in
docs/reliability.md. The server they expect runs the fixture models with `LIMITS` (a smaller body limit and
shorter timeouts than the defaults, so the probes stay fast); the other limits are the defaults.
"""

from __future__ import annotations

import functools
import io
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from tests.support import images
from tests.support.fixture_models import CLASSIFIER, DETECTOR, SEGMENTER

LIMITS = {"PACA_BODY_TIMEOUT_S": "2", "PACA_HEADER_TIMEOUT_S": "1", "PACA_MAX_REQUEST_BYTES": str(8 << 20)}
MAX_ASPECT_RATIO = 64  # the default PACA_MAX_ASPECT_RATIO
PIXELS = np.zeros((1, 3, 32, 32), np.float32).ravel().tolist()
GOOD = {"name": "pixel_values", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": PIXELS}
V2_INFER = f"/v2/models/{CLASSIFIER}/infer"
CLASSIFY = f"/v1/models/{CLASSIFIER}/classify"
TASKS = ((CLASSIFIER, "classify"), (DETECTOR, "detect"), (SEGMENTER, "segment"))


@dataclass(frozen=True)
class Probe:
    group: str
    name: str
    method: str
    path: str
    request: Callable[[], dict[str, Any]]  # httpx request keyword arguments, built when sent (some are large)
    status: int
    words: tuple[str, ...] = ()  # what the error message must say
    checks: tuple[str, ...] = field(default=())  # extra checks on a 200: "segment size"

    @property
    def expectation(self) -> str:
        said = " / ".join(f"“{word}”" for word in self.words)
        return f"{self.status}" + (f": {said}" if said else "")


def png(width: int, height: int, value: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def sparse_png(width: int, height: int) -> bytes:
    """A large image in a small file (~120 KB for 6000×6000): what a decompression-bomb-style upload looks like."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[::7, ::5] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def chunked_multipart(total: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """A multipart upload with no Content-Length (chunked transfer): the limit must hold while it streams."""
    yield (b'--B\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
           b"Content-Type: image/png\r\n\r\n")
    for _ in range(total // chunk):
        yield bytes(chunk)
    yield b"\r\n--B--\r\n"


def _v2(body: dict) -> Callable[[], dict[str, Any]]:
    return lambda: {"json": body}


V2_FIELDS: dict[str, tuple[dict, str]] = {
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


def _binary_overflow() -> dict[str, Any]:
    header = json.dumps({"inputs": [{"name": "pixel_values", "shape": [2**40, 2**40, 3, 3], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 16}}]}).encode()
    return {"content": header + bytes(16), "headers": {"Inference-Header-Content-Length": str(len(header))}}


DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
DEGENERATE = [(1, 50), (50, 1), (2, 2), (300, 1), (1, 300), (8000, 1), (4000, 3)]


def _probes() -> list[Probe]:
    probes = [Probe("v2 request fields", name, "POST", V2_INFER, _v2(body), 400, (words,))
              for name, (body, words) in V2_FIELDS.items()]
    probes += [
        Probe("v2 request fields", "binary tensor whose shape product overflows", "POST", V2_INFER, _binary_overflow,
              400, ("max_batch_size",)),
        Probe("v2 request fields", "a 0×0 image tensor to the segmenter", "POST", f"/v2/models/{SEGMENTER}/infer",
              _v2({"inputs": [{"name": "pixel_values", "shape": [1, 3, 0, 0], "datatype": "FP32", "data": []}]}),
              400, ("axis 2 is 0",)),
        Probe("v2 request fields", "a 100000×100000 tensor to the segmenter", "POST",
              f"/v2/models/{SEGMENTER}/infer",
              _v2({"inputs": [{"name": "pixel_values", "shape": [1, 3, 100000, 100000], "datatype": "FP32",
                               "data": []}]}), 400, ("1 to 128",)),
        Probe("v2 request fields", "an unknown model version", "POST", f"/v2/models/{CLASSIFIER}/versions/9/infer",
              _v2({"inputs": [GOOD]}), 404, ("no version '9'",)),
        Probe("JSON", "JSON nested 100,000 deep (v2)", "POST", V2_INFER,
              lambda: {"content": DEEP_JSON, "headers": {"content-type": "application/json"}}, 400, ("depth limit",)),
        Probe("JSON", "JSON nested 100,000 deep (REST)", "POST", CLASSIFY,
              lambda: {"content": DEEP_JSON, "headers": {"content-type": "application/json"}}, 400, ("depth limit",)),
        Probe("JSON", "JSON that does not parse", "POST", CLASSIFY,
              lambda: {"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400,
              ("not valid JSON",)),
        Probe("JSON", "JSON without `images`", "POST", CLASSIFY, lambda: {"json": {"pictures": []}}, 400,
              ("images",)),
        Probe("JSON", "base64 that is not base64", "POST", CLASSIFY, lambda: {"json": {"images": [{"b64": "***"}]}},
              400, ("base64",)),
    ]
    for width, height in DEGENERATE:
        refused = max(width, height) / min(width, height) > MAX_ASPECT_RATIO
        for model, verb in TASKS:
            probes.append(Probe(
                "image geometry", f"{width}×{height} image to /{verb}", "POST", f"/v1/models/{model}/{verb}",
                functools.partial(lambda w, h: {"files": {"image": png(w, h)}}, width, height),
                400 if refused else 200,
                (f"{width}×{height}", "aspect ratio", f"{MAX_ASPECT_RATIO}:1") if refused else (),
                ("segment size",) if verb == "segment" and not refused else ()))
    probes += [
        Probe("images", "bytes that are not an image", "POST", CLASSIFY,
              lambda: {"content": b"hello, world", "headers": {"Content-Type": "image/png"}}, 400,
              ("not a recognised",)),
        Probe("images", "a truncated PNG", "POST", CLASSIFY,
              lambda: {"content": images.png(1)[:200], "headers": {"Content-Type": "image/png"}}, 400,
              ("truncated",)),
        Probe("images", "an empty body", "POST", CLASSIFY,
              lambda: {"content": b"", "headers": {"Content-Type": "image/jpeg"}}, 400, ("empty",)),
        Probe("images", "a 7000×6000 image (42 M pixels; limit 40 M)", "POST", f"/v1/models/{SEGMENTER}/segment",
              lambda: {"files": {"image": sparse_png(7000, 6000)}}, 413, ("7000×6000", "limit is 40000000")),
        Probe("request budgets", "three 6000×6000 images in one request (108 M pixels; limit 50 M)", "POST",
              f"/v1/models/{SEGMENTER}/segment", lambda: {"files": [("image", sparse_png(6000, 6000))] * 3}, 413,
              ("pixels together", "limit is 50000000")),
        Probe("request budgets", "65 images in one JSON request (limit 64)", "POST",
              f"/v1/models/{SEGMENTER}/segment", lambda: {"json": {"images": [{"b64": ""}] * 65}}, 400,
              ("65 images", "limit is 64")),
        Probe("request budgets", "9 BYTES images on v2 (max_batch_size 8)", "POST", V2_INFER,
              _v2({"inputs": [{"name": "img", "shape": [9], "datatype": "BYTES", "data": ["aGk="] * 9}]}), 400,
              ("9 images exceed", "max_batch_size 8")),
        Probe("bodies", "64 MiB chunked multipart upload (limit 8 MiB)", "POST", CLASSIFY,
              lambda: {"content": chunked_multipart(64 << 20),
                       "headers": {"content-type": "multipart/form-data; boundary=B"}}, 413,
              ("exceeds the limit of 8388608 bytes",)),
        Probe("bodies", "12 MiB streamed raw body, no Content-Length", "POST", CLASSIFY,
              lambda: {"content": iter([bytes(1 << 20)] * 12), "headers": {"content-type": "image/png"}}, 413,
              ("exceeds the limit",)),
        Probe("bodies", "9 MiB body with Content-Length", "POST", CLASSIFY,
              lambda: {"content": bytes(9 << 20), "headers": {"content-type": "image/png"}}, 413,
              ("exceeds the limit",)),
        Probe("bodies", "multipart with 70 files", "POST", CLASSIFY,
              lambda: {"files": [("image", ("a.png", png(8, 8)))] * 70}, 400, ("malformed multipart body",
                                                                               "Too many files")),
        Probe("bodies", "multipart with 150 fields", "POST", CLASSIFY,
              lambda: {"data": {f"f{i}": "x" for i in range(150)}, "files": {"image": png(8, 8)}}, 400,
              ("Too many fields",)),
        Probe("bodies", "multipart without an `image` part", "POST", CLASSIFY,
              lambda: {"files": {"picture": ("a.png", images.png(1))}}, 400, ("no 'image' field",)),
        Probe("bodies", "`image` as a text field", "POST", CLASSIFY,
              lambda: {"data": {"image": "not a file"}, "files": {"other": ("a", b"x")}}, 400, ("not a file",)),
        Probe("bodies", "Content-Type text/plain", "POST", CLASSIFY,
              lambda: {"content": b"x", "headers": {"Content-Type": "text/plain"}}, 415, ("Content-Type",)),
        Probe("routing and parameters", "an unknown model", "POST", "/v1/models/nope/classify",
              lambda: {"files": {"image": images.png(3)}}, 404, ("nope",)),
        Probe("routing and parameters", "the wrong task's verb", "POST", f"/v1/models/{DETECTOR}/classify",
              lambda: {"files": {"image": images.png(3)}}, 400, ("/detect",)),
        Probe("routing and parameters", "k=0", "POST", f"{CLASSIFY}?k=0",
              lambda: {"files": {"image": images.png(3)}}, 400, ("k",)),
        Probe("routing and parameters", "a PNG label map for two images", "POST", f"/v1/models/{SEGMENTER}/segment",
              lambda: {"headers": {"Accept": "image/png"},
                       "files": [("image", images.png(4)), ("image", images.png(5))]}, 400),
        Probe("routing and parameters", "Accept: text/html", "POST", f"/v1/models/{SEGMENTER}/segment",
              lambda: {"headers": {"Accept": "text/html"}, "files": {"image": images.png(3)}}, 406),
        Probe("routing and parameters", "a path that does not exist", "GET", "/v1/nothing-here", dict, 404),
    ]
    return probes


PROBES = _probes()


def check(probe: Probe, status: int, body: Any, content: bytes, request_id: str | None) -> list[str]:
    """What is wrong with an answer to `probe` (empty: it is the documented answer)."""
    problems = []
    if status != probe.status:
        problems.append(f"status {status}, expected {probe.status}")
    if status >= 400:
        if not isinstance(body, dict) or set(body) != {"error", "request_id"}:
            return [*problems, f"error body is not {{error, request_id}}: {content[:200]!r}"]
        if body["request_id"] != request_id:
            problems.append("request_id differs from X-Request-ID")
        problems += [f"error does not say {word!r}: {body['error']!r}" for word in probe.words
                     if word not in body["error"]]
    elif "segment size" in probe.checks:
        result = body["results"][0]
        width, height = (int(side) for side in probe.name.split(" ")[0].split("×"))
        if (result["width"], result["height"]) != (width, height):
            problems.append(f"label map is {result['width']}×{result['height']}")
    return problems


# Slow clients and memory: measured on the raw socket and /proc, for the test and the table alike.

def unfinished_headers(host: str, port: int, opening: bytes, wait_s: float = 20.0) -> tuple[bytes, float]:
    """Send `opening` (headers that never end, or nothing) and read until the server closes: its answer and
    how long it took."""
    started = time.monotonic()
    with socket.create_connection((host, port)) as sock:
        sock.sendall(opening)
        sock.settimeout(wait_s)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer, time.monotonic() - started


def trickled_body(host: str, port: int, path: str, wait_s: float = 30.0) -> tuple[bytes, float]:
    """Declare a 100 kB body and send it one byte every 0.2 s: the server's answer and when it came."""
    started = time.monotonic()
    with socket.create_connection((host, port)) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     "Content-Length: 100000\r\n\r\n".encode())
        sock.settimeout(0.2)
        answer = b""
        while not answer and time.monotonic() - started < wait_s:
            sock.sendall(b"x")
            try:
                answer = sock.recv(4000)
            except TimeoutError:
                continue
        answered = time.monotonic() - started
        sock.settimeout(5.0)
        while answer and not _complete(answer):  # the body may come in a later packet than the headers
            chunk = sock.recv(4000)
            if not chunk:
                break
            answer += chunk
    return answer, answered


def _complete(answer: bytes) -> bool:
    """Whether `answer` holds a whole HTTP response: headers and Content-Length bytes of body."""
    head, separator, body = answer.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def rss_kib(pid: int) -> dict[str, int]:
    """The process's resident memory now (VmRSS) and its peak so far (VmHWM), in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def largest_admitted_requests(url: str, pid: int) -> tuple[list[int], float, dict[str, int], dict[str, int]]:
    """One 36-megapixel image (the most one request may hold as a single image under the 40 M pixel limit)
    through every task: the statuses, the peak RSS growth in MiB, and RSS before and after."""
    before = rss_kib(pid)
    big = sparse_png(6000, 6000)
    statuses = [httpx.post(f"{url}/v1/models/{model}/{verb}", files={"image": big}, timeout=180).status_code
                for model, verb in (*TASKS, (CLASSIFIER, "explain"))]
    after = rss_kib(pid)
    return statuses, (after["VmHWM"] - before["VmRSS"]) / 1024, before, after
