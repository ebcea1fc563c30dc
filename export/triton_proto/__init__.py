"""Triton ModelConfig protobuf messages (generated from model_config.proto)."""
