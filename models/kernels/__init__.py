"""Fused PaCaAttention kernels (OpenAI Triton).

One kernel source serves the torch CUDA backend and the TensorRT plugin.
"""
