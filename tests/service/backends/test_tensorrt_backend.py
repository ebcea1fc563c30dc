"""The TensorRT backend's pure-Python parts (no TensorRT needed)."""

from __future__ import annotations


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
