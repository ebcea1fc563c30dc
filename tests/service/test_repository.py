"""The model repository YAML and the server settings (service.repository, service.settings)."""

from __future__ import annotations

import pytest

from service.repository import load_repository
from service.settings import DEFAULT_REPOSITORY, ServerSettings
from tests.support.paths import REPO_ROOT


def test_default_repository_serves_the_three_demo_models() -> None:
    repository = load_repository(DEFAULT_REPOSITORY)
    models = {m.name: m for m in repository.models}
    assert set(models) == {"demo-digits-classifier", "demo-digits-detector", "demo-digits-segmenter"}
    for name, model in models.items():
        assert model.artifact == REPO_ROOT / "artifacts" / "demo" / f"{name}.onnx"
        assert model.backend == "onnxruntime" and model.fallback_arch is None  # the server never exports
    assert models["demo-digits-detector"].max_batch_size == 4


def test_repository_validation_names_the_problem(tmp_path) -> None:
    from pydantic import ValidationError

    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {name: a, artifact: x.onnx}\n  - {name: a, artifact: y.onnx}\n")
    with pytest.raises(ValidationError, match="duplicate model names"):
        load_repository(bad)
    bad.write_text("models:\n  - {name: a, backend: onnxruntime}\n")
    with pytest.raises(ValidationError, match="needs 'artifact'"):
        load_repository(bad)
    bad.write_text("models:\n  - {name: a, artifact: x.onnx, batching: {max_queue_size: 0}}\n")
    with pytest.raises(ValidationError, match="max_queue_size"):
        load_repository(bad)
    good = tmp_path / "sub" / "good.yaml"
    good.parent.mkdir()
    good.write_text("models:\n  - {name: a, artifact: models/x.onnx}\n")
    assert load_repository(good).models[0].artifact == tmp_path / "sub" / "models" / "x.onnx"


def test_settings_come_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("PACA_PORT", "9123")
    monkeypatch.setenv("PACA_LOG_JSON", "false")
    monkeypatch.setenv("PACA_MAX_IMAGE_PIXELS", "1234")
    settings = ServerSettings()
    assert (settings.port, settings.log_json, settings.max_image_pixels) == (9123, False, 1234)
    assert ServerSettings(port=1).port == 1  # explicit (CLI) values win
