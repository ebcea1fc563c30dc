"""Every metric the Grafana dashboard queries is exported by the real server, with the process metrics and
without the `*_created` series. Requests over REST, KServe v2 and gRPC first, so the labelled histograms
have series."""

from __future__ import annotations

import httpx
import numpy as np

from loadtest.server_metrics import parse_metrics
from loadtest.workload import v2_tensors
from tests.deploy.test_grafana import REQUIRED_FAMILIES, queried_metrics
from tests.loadtest.conftest import CLASSIFIER
from tests.support.paths import REPO_ROOT
from tests.support.server import ServerProcess


def _exported_sample_names(url: str) -> set[str]:
    """Sample names exactly as exposed, which is what Prometheus stores and the dashboard queries."""
    return set(parse_metrics(httpx.get(f"{url}/metrics", timeout=5).text))


def test_every_metric_the_dashboard_queries_is_exported(loadtest_server: ServerProcess) -> None:
    import grpc

    from loadtest.workload import grpc_request, load_images
    from service.grpc_gen import grpc_service_pb2_grpc as pb_grpc

    url = loadtest_server.url
    image = REPO_ROOT / "loadtest" / "images" / "digit_03_label3.png"
    with httpx.Client(base_url=url, timeout=30) as client:
        response = client.post(f"/v1/models/{CLASSIFIER}/classify", files={"image": image.read_bytes()})
        assert response.status_code == 200
        (tensor,) = v2_tensors(client, CLASSIFIER, load_images(None, "classification")[:1])
    assert tensor.dtype == np.float32 and tensor.shape[0] == 1
    with grpc.insecure_channel(f"127.0.0.1:{loadtest_server.grpc_port}") as channel:
        answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_request(CLASSIFIER, tensor, "logits"),
                                                                       timeout=30)
    assert answer.raw_output_contents

    exported = _exported_sample_names(url)
    queried = queried_metrics()
    assert queried >= REQUIRED_FAMILIES
    missing = queried - exported
    assert not missing, f"the dashboard queries series the server does not export: {sorted(missing)}"
    # The process metrics, and none of prometheus-client's *_created timestamps.
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
            "process_max_fds"} <= exported
    assert not [name for name in exported if name.endswith("_created")]
