"""Service parts that need no server: image decoding, the repository file, settings, Triton metrics text."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.decode import decode_image
from service.errors import BadRequest, PayloadTooLarge
from service.metrics import render_triton
from service.repository import load_repository
from service.settings import DEFAULT_REPOSITORY, ServerSettings
from service.stats import ModelStats
from tests.support.paths import REPO_ROOT

LIMIT = 10_000_000


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _picture() -> Image.Image:
    y, x = np.mgrid[0:30, 0:40]
    return Image.fromarray(np.stack([x * 6, y * 8, (x + y) * 3], axis=-1).astype(np.uint8))


def test_exif_orientation_is_applied() -> None:
    picture = _picture()
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90° counter-clockwise to display": stored rotated the other way
    stored = picture.transpose(Image.Transpose.ROTATE_270)
    decoded = decode_image(_encode(stored, "PNG", exif=exif), max_pixels=LIMIT)
    assert decoded.size == picture.size
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(picture))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_8bit_rgb(mode: str) -> None:
    picture = _picture()
    if mode == "I;16":
        image = Image.fromarray(np.asarray(picture.convert("L")).astype(np.uint16) * 257)
    elif mode == "I":
        image = Image.fromarray(np.asarray(picture.convert("L")).astype(np.int32) * 257)
    elif mode == "F":
        image = Image.fromarray(np.asarray(picture.convert("L")).astype(np.float32) / 255.0)
    elif mode == "PA":
        image = picture.convert("P").convert("PA")
    else:
        image = picture.convert(mode)
    fmt = "TIFF" if mode in ("I", "F", "CMYK", "PA") else "PNG"
    decoded = decode_image(_encode(image, fmt), max_pixels=LIMIT)
    assert decoded.mode == "RGB" and decoded.size == picture.size
    if mode in ("L", "I;16", "I", "F"):
        gray = np.asarray(picture.convert("L")).astype(int)
        assert np.abs(np.asarray(decoded)[..., 0].astype(int) - gray).max() <= 1


def test_transparent_pixels_become_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    decoded = decode_image(_encode(rgba, "PNG"), max_pixels=LIMIT)
    assert np.asarray(decoded)[0, 0].tolist() == [255, 255, 255]


def test_bad_and_oversized_images_raise_client_errors() -> None:
    with pytest.raises(BadRequest, match="not a recognised image"):
        decode_image(b"GIF89a?? definitely not", max_pixels=LIMIT)
    with pytest.raises(BadRequest, match="truncated or corrupt"):
        decode_image(_encode(_picture(), "JPEG")[:300], max_pixels=LIMIT)
    with pytest.raises(BadRequest, match="empty"):
        decode_image(b"", max_pixels=LIMIT)
    with pytest.raises(PayloadTooLarge, match="40×30"):
        decode_image(_encode(_picture(), "PNG"), max_pixels=1000)


def test_default_repository_serves_the_three_demo_models() -> None:
    repository = load_repository(DEFAULT_REPOSITORY)
    models = {m.name: m for m in repository.models}
    assert set(models) == {"demo-digits-classifier", "demo-digits-detector", "demo-digits-segmenter"}
    for name, model in models.items():
        assert model.artifact == REPO_ROOT / "artifacts" / "demo" / f"{name}.onnx"
        assert model.backend == "onnxruntime" and model.fallback_arch is None  # the server never exports
    assert models["demo-digits-detector"].max_batch_size == 1


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


def test_triton_metrics_text_has_exact_names_and_labels() -> None:
    stats = ModelStats("m", "1")
    stats.record_queue(2_000)
    stats.record_execution(batch_size=4, requests=2, input_ns=1_000, infer_ns=9_000, output_ns=1_000)
    stats.record_success(50_000)
    stats.record_failure(1_000, "REJECTED")
    text = render_triton([stats])
    lines = set(text.splitlines())
    assert "# TYPE nv_inference_count counter" in lines
    assert 'nv_inference_count{model="m",version="1"} 4' in lines
    assert 'nv_inference_exec_count{model="m",version="1"} 1' in lines
    assert 'nv_inference_request_success{model="m",version="1"} 1' in lines
    assert 'nv_inference_request_failure{model="m",version="1",reason="REJECTED"} 1' in lines
    assert 'nv_inference_compute_infer_duration_us{model="m",version="1"} 18' in lines  # 2 requests × 9 µs
    assert 'nv_inference_request_duration_us{model="m",version="1"} 51' in lines
    assert not any("_total" in line for line in lines)


def test_tensorrt_backend_finds_the_model_description_without_tensorrt(tmp_path) -> None:
    """The pure-Python part of the TensorRT backend: where the source ONNX of an engine is."""
    from service.backends.tensorrt_backend import source_onnx

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "model.onnx").write_bytes(b"onnx")
    (cache / "model.plan").write_bytes(b"plan")
    links = tmp_path / "links"
    links.mkdir()
    (links / "served.plan").symlink_to(cache / "model.plan")
    assert source_onnx(links / "served.plan", {}, "model.onnx") == cache / "model.onnx"
    assert source_onnx(links / "served.plan", {"onnx": "/x/y.onnx"}, "model.onnx").as_posix() == "/x/y.onnx"
    assert source_onnx(links / "served.plan", {}, "other.onnx") is None
