"""Server settings: command-line flags override environment variables (prefix PACA_), which override defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REPOSITORY = Path(__file__).with_name("default_repository.yaml")


class ServerSettings(BaseSettings):
    """Process-wide settings; per-model settings live in the model repository YAML."""

    model_config = SettingsConfigDict(env_prefix="PACA_", extra="ignore")

    config: Path = Field(DEFAULT_REPOSITORY, description="model repository YAML")
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = Field(8001, description="gRPC port; None or 0 disables gRPC")
    log_level: str = "info"
    log_json: bool = True
    preprocess_threads: int = Field(2, ge=1, description="threads that decode, preprocess and postprocess")
    max_request_bytes: int = Field(32 << 20, ge=1024, description="largest accepted request body")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest decoded image (width × height)")
    max_images_per_request: int = Field(64, ge=1)
    exit_timeout_s: float = Field(30.0, ge=0, description="how long shutdown waits for accepted requests")
    exit_on_error: bool = Field(True, description="stop the server when a model fails to load")
