"""Server settings: command-line flags override environment variables (prefix PACA_), which override defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_REPOSITORY = Path(__file__).with_name("default_repository.yaml")


class ServerSettings(BaseSettings):
    """Process-wide settings; per-model settings live in the model repository YAML."""

    model_config = SettingsConfigDict(env_prefix="PACA_", extra="ignore")

    config: Path = Field(DEFAULT_REPOSITORY, description="model repository YAML")
    host: str = Field("127.0.0.1", description="bind address (0.0.0.0: every interface, as in containers)")
    port: int = Field(8000, description="HTTP port: REST, KServe v2 HTTP, health, /metrics")
    grpc_port: int | None = Field(8001, description="KServe v2 gRPC port; 0 turns gRPC off")
    log_level: str = Field("info", description="debug, info, warning or error")
    log_json: bool = Field(True, description="one JSON object per log line (false: plain text)")
    tracing: bool = Field(False, description="OpenTelemetry traces over OTLP/HTTP, configured by the standard "
                          "OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, ...)")
    preprocess_threads: int = Field(2, ge=1, description="threads that decode, preprocess and postprocess")
    exit_timeout_s: float = Field(30.0, ge=0, description="how long shutdown waits for accepted requests")
    shutdown_delay_s: float = Field(0.0, ge=0, description="after SIGTERM, keep serving this long with readiness "
                                    "false (load balancers stop sending), then stop accepting connections")
    exit_on_error: bool = Field(True, description="stop the server when a model fails to load; false: the "
                                "other models serve and readiness names the failed one")

    # Per-request limits, checked before anything is decoded.
    max_request_bytes: int = Field(32 << 20, ge=1024, description="largest request body (streamed bodies too)")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest image (width × height)")
    max_images_per_request: int = Field(64, ge=1, description="images per request (REST and v2 BYTES)")
    max_request_pixels: int = Field(50_000_000, ge=1, description="pixels of all images of one request")
    max_request_memory_mb: int = Field(1024, ge=16, description="estimated working memory of one request "
                                       "(decoded images, model inputs, label maps)")
    max_aspect_ratio: float = Field(64.0, ge=1, description="longest/shortest image side; beyond it: 400")
    max_multipart_parts: int = Field(100, ge=1, description="parts of a multipart body (files and fields)")

    # Server-wide limits.
    max_inflight_requests: int = Field(512, ge=1, description="inference requests in progress; beyond: 503")
    max_inflight_memory_mb: int = Field(4096, ge=16, description="estimated memory of all requests in "
                                        "progress; beyond: 503")
    header_timeout_s: float = Field(10.0, gt=0, description="time a connection may take to send request headers")
    body_timeout_s: float = Field(60.0, gt=0, description="time a request may take to send its body; beyond: 408")
    keep_alive_timeout_s: int = Field(5, ge=1, description="idle keep-alive connections close after this")
    backlog: int = Field(4096, ge=64, description="listen backlog (connections waiting to be accepted)")

    # Authentication (off unless keys are set).
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="accepted API keys (Authorization: Bearer <key> or X-API-Key), "
        "comma-separated or a JSON list in PACA_API_KEYS; empty = no authentication")
    auth_health: bool = Field(False, description="also require a key for health, metrics and docs")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [k.strip() for k in text.split(",") if k.strip()]
        return value
