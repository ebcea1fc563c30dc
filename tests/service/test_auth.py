"""Optional API keys: off by default; when set, inference and repository endpoints (REST, v2 HTTP, gRPC) need a
key, health and metrics stay open unless asked, answers are 401/403 JSON, and keys never reach the log."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest

from service.grpc_gen import grpc_service_pb2 as pb
from service.grpc_gen import grpc_service_pb2_grpc as pb_grpc
from tests.support import images
from tests.support.fixture_models import CLASSIFIER, repository_dict
from tests.support.server import running_server

KEYS = ("first-key-4f9a", "second-key-77c1")


@pytest.fixture(scope="module")
def keyed_server(artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    env = {"PACA_API_KEYS": ",".join(KEYS)}
    with running_server(tmp_path_factory.mktemp("auth"), repository_dict(artifacts_dir), env=env,
                        grpc=True) as server:
        yield server


def test_http_endpoints_need_a_valid_key(keyed_server) -> None:
    url = keyed_server.url
    classify = f"{url}/v1/models/{CLASSIFIER}/classify"
    missing = httpx.post(classify, files={"image": images.png(1)}, timeout=30)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "API key" in missing.json()["error"] and missing.json()["request_id"]
    wrong = httpx.post(classify, files={"image": images.png(1)}, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 403 and wrong.json()["error"] == "the API key is not valid"
    for headers in ({"Authorization": f"Bearer {KEYS[0]}"}, {"X-API-Key": KEYS[1]}):
        assert httpx.post(classify, files={"image": images.png(1)}, headers=headers, timeout=30).status_code == 200
    assert httpx.get(f"{url}/v2/models/{CLASSIFIER}/config", timeout=10).status_code == 401
    assert httpx.post(f"{url}/v2/repository/index", timeout=10).status_code == 401
    for open_path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
        assert httpx.get(f"{url}{open_path}", timeout=10).status_code == 200, open_path
    log = keyed_server.log()
    assert not any(key in log for key in KEYS) and "nope" not in log


def test_grpc_needs_a_valid_key_in_its_metadata(keyed_server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{keyed_server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live  # health stays open
        request = pb.ModelMetadataRequest(name=CLASSIFIER)
        for metadata, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                               ((("authorization", "Bearer nope"),), grpc.StatusCode.PERMISSION_DENIED)):
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelMetadata(request, metadata=metadata, timeout=10)
            assert refused.value.code() == code
        answer = stub.ModelMetadata(request, metadata=(("x-api-key", KEYS[0]),), timeout=10)
        assert answer.name == CLASSIFIER
