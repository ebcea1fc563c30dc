"""`paca serve`: run the HTTP (and gRPC) server on a model repository. Imports nothing heavy at module level.

Configuration mistakes (settings, the repository file, missing artifacts) are found before any port is bound
and end the command with one line on stderr and exit status 1; so does a model that fails to load while
the server starts (supervisors then see a failure, not a kill).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from typer.core import TyperCommand

CONFIG_ERROR = 1
FLAGGED = frozenset({"config", "host", "port", "grpc_port", "log_level", "log_json"})


class ServeCommand(TyperCommand):
    """`paca serve` whose help ends with every other setting, read from `ServerSettings` only when help is
    shown (the help stays true as settings are added, and other commands do not pay for the import)."""

    @property
    def epilog(self) -> str:
        return settings_help()

    @epilog.setter
    def epilog(self, value: str | None) -> None:
        pass


def register(app: typer.Typer) -> None:
    app.command("serve", cls=ServeCommand)(serve)


def settings_help() -> str:
    """One paragraph per setting without a flag: its variable, default and meaning."""
    from service.settings import ServerSettings

    lines = ["Every setting is also an environment variable; these have no flag:"]
    for name, field in ServerSettings.model_fields.items():
        if name in FLAGGED:
            continue
        default = field.get_default(call_default_factory=True)
        shown = ",".join(default) if isinstance(default, list) else default
        if shown in ("", None):
            shown = "none"
        lines.append(f"PACA_{name.upper()} (default {shown!s}): {field.description or ''}".rstrip(": "))
    return "\n\n".join(lines)


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

    overrides = {
        key: value
        for key, value in {"config": config, "host": host, "port": port, "grpc_port": grpc_port,
                           "log_level": log_level, "log_json": log_json}.items()
        if value is not None
    }
    try:
        settings = checked_settings(overrides)
        repository = checked_repository(settings.config, check_artifacts=settings.exit_on_error)
    except ConfigurationError as exc:
        typer.echo(f"paca serve: {exc}", err=True)
        raise typer.Exit(CONFIG_ERROR) from None
    configure_logging(settings.log_level, settings.log_json)
    application = create_app(settings, repository)
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
    application.state.request_exit = lambda: setattr(server, "should_exit", True)
    server.run()
    if application.state.exit_code:
        sys.exit(application.state.exit_code)


class ConfigurationError(Exception):
    """A mistake in the settings or the model repository, said in one line."""


def checked_settings(overrides: dict[str, object]):
    """ServerSettings from the flags and PACA_* variables, or ConfigurationError naming the first bad one."""
    from pydantic import ValidationError

    from service.settings import ServerSettings

    try:
        return ServerSettings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        where = f"flag --{name.replace('_', '-')} or PACA_{name.upper()}" if name in FLAGGED else f"PACA_{name.upper()}"
        raise ConfigurationError(f"setting {name} ({where}): {first['msg']}, got {first.get('input')!r}") from None


def checked_repository(path: Path, *, check_artifacts: bool = True):
    """The validated repository, or ConfigurationError naming the first problem (with `check_artifacts`, a
    missing artifact too; without, the server starts and that model fails alone)."""
    import yaml
    from pydantic import ValidationError

    from service.model_runtime import resolve_artifact
    from service.repository import load_repository

    try:
        repository = load_repository(path)
    except FileNotFoundError:
        raise ConfigurationError(f"model repository {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"model repository {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigurationError(f"model repository {path}: {where}: {first['msg']} "
                                 f"({exc.error_count()} problem(s) in all)") from None
    for model in repository.models if check_artifacts else ():
        try:
            resolve_artifact(model, quiet=True)
        except FileNotFoundError as exc:
            raise ConfigurationError(str(exc)) from None
    return repository
