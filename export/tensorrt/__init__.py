"""TensorRT engines for PaCa ONNX artifacts: profiles, precision, manifest, builder, QDP plugin.

Everything except `builder`, `runtime` and `plugin` is plain Python and runs without TensorRT.
"""
