"""TensorRT engines for PaCa ONNX artifacts: profiles, precision, manifest, builder, QDP plugin.

Only `builder`, `runtime` and `plugin` need TensorRT; `aot_kernel` needs OpenAI Triton (no GPU); the rest
is plain Python.
"""
