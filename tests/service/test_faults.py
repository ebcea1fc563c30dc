"""Faults: a model that cannot load, a remote backend that fails, and an unexpected exception — each answers
with a status that says what happened, the request id, and no exception text; everyone else keeps being served."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.support import images
from tests.support.fixture_models import CLASSIFIER, repository_dict
from tests.support.server import running_server, start_server, stop_server


def test_a_model_that_fails_to_load_leaves_the_others_serving(artifacts_dir: Path, tmp_path: Path) -> None:
    repository = repository_dict(artifacts_dir)
    repository["models"] = [repository["models"][0], {"name": "ghost", "artifact": str(tmp_path / "missing.onnx")}]
    server = start_server(tmp_path, repository, env={"PACA_EXIT_ON_ERROR": "false"}, wait_ready=False)
    try:
        for _ in range(600):  # until the classifier serves (the ghost never will)
            try:
                if httpx.get(f"{server.url}/v2/models/{CLASSIFIER}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.process.poll() is None, server.log()
            asyncio.run(asyncio.sleep(0.2))
        ready = httpx.get(f"{server.url}/v2/health/ready", timeout=5)
        assert ready.status_code == 503 and "ghost" in ready.json()["failed"]
        assert "missing.onnx does not exist" in ready.json()["failed"]["ghost"]
        ok = httpx.post(f"{server.url}/v1/models/{CLASSIFIER}/classify", files={"image": images.png(1)}, timeout=30)
        assert ok.status_code == 200
        ghost = httpx.post(f"{server.url}/v1/models/ghost/classify", files={"image": images.png(1)}, timeout=30)
        assert ghost.status_code == 503 and "failed to load" in ghost.json()["error"]
        index = {m["name"]: m for m in httpx.post(f"{server.url}/v2/repository/index", timeout=5).json()}
        assert index["ghost"]["state"] == "UNAVAILABLE" and "missing.onnx" in index["ghost"]["reason"]
    finally:
        stop_server(server)


@pytest.fixture()
def remote_pair(artifacts_dir: Path, tmp_path: Path):
    """A remote PaCa Serve whose classifier queue holds one request and whose batches wait 1.5 s to fill,
    and a proxy serving it through the remote backend with two instances (two concurrent remote calls)."""
    remote_repo = repository_dict(artifacts_dir, **{CLASSIFIER: {
        "batching": {"max_queue_delay_ms": 1500, "max_queue_size": 1, "queue_timeout_ms": 60000, "policy": "delay"}}})
    (tmp_path / "remote").mkdir()
    remote = start_server(tmp_path / "remote", remote_repo)
    proxy_repo = {"models": [{"name": "far", "backend": "triton", "max_batch_size": 1, "instances": 2,
                              "batching": {"max_queue_delay_ms": 0, "max_queue_size": 8, "queue_timeout_ms": 60000},
                              "warmup": {"enabled": False},
                              "options": {"url": remote.url, "model": CLASSIFIER, "timeout_s": 20}}]}
    (tmp_path / "proxy").mkdir()
    with running_server(tmp_path / "proxy", proxy_repo) as proxy:
        yield remote, proxy
    stop_server(remote)


def test_remote_errors_keep_their_meaning(remote_pair) -> None:
    remote, proxy = remote_pair

    async def two_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=60) as client:
            return list(await asyncio.gather(*(
                client.post("/v1/models/far/classify", files={"image": images.png(10 + i)}) for i in range(2))))

    statuses = sorted(r.status_code for r in asyncio.run(two_at_once()))
    assert statuses == [200, 503]  # the remote's full queue is the client's 503, not a 500
    stop_server(remote)  # now the remote cannot be reached: 502 naming it
    gone = httpx.post(f"{proxy.url}/v1/models/far/classify", files={"image": images.png(20)}, timeout=60)
    assert gone.status_code == 502 and remote.url.removeprefix("http://") in gone.json()["error"]
    assert gone.json()["request_id"] == gone.headers["x-request-id"]


def test_an_unexpected_exception_is_a_500_with_the_request_id_and_no_exception_text(tmp_path: Path) -> None:
    """The real application's middleware stack, with one route that fails in a way no handler expects."""
    from service.app import create_app
    from service.repository import RepositoryConfig
    from service.settings import ServerSettings

    repository = RepositoryConfig(models=[{"name": "unused", "artifact": str(tmp_path / "never-loaded.onnx")}])
    app = create_app(ServerSettings(), repository)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/boom", headers={"X-Request-ID": "trace-42"})

    response = asyncio.run(call())
    assert response.status_code == 500 and response.headers["x-request-id"] == "trace-42"
    body = response.json()
    assert body["request_id"] == "trace-42" and "secret" not in body["error"] and "trace-42" in body["error"]
