"""Hostile and careless input against a real server: the catalogue of tests/support/hostile.py (every field of a
v2 request checked by type, degenerate image geometry, deep JSON, bodies over the limit, chunked too,
per-request budgets, bad images, routing), then memory and slow clients.

Every refusal is a 4xx JSON `{"error", "request_id"}` that names the problem and carries `X-Request-ID`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support import images
from tests.support.fixture_models import CLASSIFIER, DETECTOR, SEGMENTER, repository_dict
from tests.support.hostile import (
    CLASSIFY,
    DEGENERATE,
    LIMITS,
    PROBES,
    Probe,
    check,
    largest_admitted_requests,
    png,
    trickled_body,
    unfinished_headers,
)
from tests.support.server import ServerProcess, running_server


@pytest.fixture(scope="module")
def strict_server(artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("limits"), repository_dict(artifacts_dir), env=LIMITS) as server:
        yield server


@pytest.mark.parametrize("probe", PROBES, ids=[f"{p.group}: {p.name}" for p in PROBES])
def test_hostile_request_gets_its_documented_answer(strict_server: ServerProcess, probe: Probe) -> None:
    """Every probe of the catalogue (tests/support/hostile.py, also the table in docs/reliability.md)."""
    response = httpx.request(probe.method, f"{strict_server.url}{probe.path}", timeout=60, **probe.request())
    try:
        body = response.json()
    except ValueError:
        body = None
    assert not check(probe, response.status_code, body, response.content, response.headers.get("x-request-id"))


def test_the_server_still_serves_after_the_probes(strict_server: ServerProcess) -> None:
    response = httpx.post(f"{strict_server.url}{CLASSIFY}", files={"image": images.png(3)}, timeout=60)
    assert response.status_code == 200 and response.json()["results"][0]["top_k"]


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


def test_the_largest_admitted_request_stays_within_its_memory_budget(strict_server: ServerProcess) -> None:
    """One 36-megapixel image through every task: the server's peak RSS grows by less than 1.5 GB."""
    statuses, growth_mib, before, after = largest_admitted_requests(strict_server.url, strict_server.process.pid)
    assert statuses == [200, 200, 200, 200]
    print(f"peak RSS growth: {growth_mib:.0f} MiB (RSS {before['VmRSS'] // 1024} → {after['VmRSS'] // 1024} MiB)")
    assert growth_mib < 1536


def test_slow_clients_are_cut_off(strict_server: ServerProcess) -> None:
    host, port = strict_server.url.removeprefix("http://").split(":")
    # Headers that never finish, and a connection that never says anything: 408 and closed.
    for opening in (b"POST /v1/models/x/classify HTTP/1.1\r\nHost: x\r\n", b""):
        answer, _ = unfinished_headers(host, int(port), opening)
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive in time" in answer
    # A body trickled one byte at a time: 408 once the body deadline passes, without waiting for the rest.
    answer, _ = trickled_body(host, int(port), CLASSIFY)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 2 s" in answer and b"x-request-id" in answer.lower()
