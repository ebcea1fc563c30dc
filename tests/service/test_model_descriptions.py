"""What a model is, said wherever a user looks: descriptions in /v1/models and /v2/models/{m}, and a model with
random weights flagged in the log, its description and every answer."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import onnx

from export.metadata import RANDOM_WEIGHTS, write_metadata
from tests.support import images
from tests.support.fixture_models import CLASSIFIER, repository_dict
from tests.support.server import running_server


def test_descriptions_and_the_random_weights_warning(artifacts_dir: Path, tmp_path: Path) -> None:
    random = tmp_path / "random.onnx"
    proto = onnx.load(str(artifacts_dir / "classifier.onnx"))
    write_metadata(proto, {"paca.weights": RANDOM_WEIGHTS, "paca.description": "a classifier nobody trained"})
    onnx.save(proto, str(random))
    repository = repository_dict(artifacts_dir, **{CLASSIFIER: {"description": "digits, 32×32, for the tests"}})
    repository["models"] = [repository["models"][0], {"name": "untrained", "artifact": str(random),
                                                      "max_batch_size": 4}]
    with running_server(tmp_path, repository) as server:
        listed = {m["name"]: m for m in httpx.get(f"{server.url}/v1/models", timeout=10).json()["models"]}
        assert listed[CLASSIFIER]["description"] == "digits, 32×32, for the tests"  # the repository overrides
        assert listed[CLASSIFIER]["warning"] is None and listed[CLASSIFIER]["weights"] == "unknown"
        assert listed["untrained"]["description"] == "a classifier nobody trained"
        assert listed["untrained"]["weights"] == "random" and "random (untrained) weights" in listed["untrained"][
            "warning"]
        v2 = httpx.get(f"{server.url}/v2/models/untrained", timeout=10).json()
        assert v2["description"] == "a classifier nobody trained" and "meaningless" in v2["warning"]
        answer = httpx.post(f"{server.url}/v1/models/untrained/classify", files={"image": images.png(1)},
                            timeout=30).json()
        assert "meaningless" in answer["warning"] and answer["results"][0]["top_k"]
        trained = httpx.post(f"{server.url}/v1/models/{CLASSIFIER}/classify", files={"image": images.png(1)},
                             timeout=30).json()
        assert "warning" not in trained
        for _ in range(50):
            if "RANDOM weights" in server.log():
                break
            time.sleep(0.1)
        assert "model 'untrained' (arch tiny_digits_cls) has RANDOM weights" in server.log()
