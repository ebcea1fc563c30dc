"""`paca serve`: run the HTTP (and gRPC) server on a model repository. Imports nothing heavy at module level."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    config: Path | None = typer.Option(None, "--config", "-c", help="model repository YAML (default: the embedded "
                                       "demo repository; env PACA_CONFIG)"),
    host: str | None = typer.Option(None, help="bind address (default 127.0.0.1; env PACA_HOST)"),
    port: int | None = typer.Option(None, help="HTTP port (default 8000; env PACA_PORT)"),
    grpc_port: int | None = typer.Option(None, "--grpc-port", help="gRPC port, 0 = off (default 8001)"),
    log_level: str | None = typer.Option(None, help="debug | info | warning | error"),
    log_json: bool | None = typer.Option(None, "--log-json/--log-text", help="JSON log lines (default) or text"),
) -> None:
    """Serve the models of a repository over REST (/v1), KServe v2 (/v2) and gRPC, with dynamic batching."""
    import uvicorn

    from service.app import create_app
    from service.http_server import GracefulServer, header_timeout_protocol
    from service.logging_setup import configure_logging
    from service.settings import ServerSettings

    overrides = {
        key: value
        for key, value in {"config": config, "host": host, "port": port, "grpc_port": grpc_port,
                           "log_level": log_level, "log_json": log_json}.items()
        if value is not None
    }
    settings = ServerSettings(**overrides)
    configure_logging(settings.log_level, settings.log_json)
    application = create_app(settings)
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        http=header_timeout_protocol(settings.header_timeout_s),
        log_config=None,
        access_log=False,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        timeout_graceful_shutdown=int(settings.exit_timeout_s) or None,
        backlog=settings.backlog,
    )
    server = GracefulServer(config, on_shutdown_signal=application.state.manager.begin_shutdown,
                            delay_s=settings.shutdown_delay_s)
    server.run()
