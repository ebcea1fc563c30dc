"""KServe v2 / Open Inference Protocol, transport-free: wire codec, inference, model metadata and config."""
