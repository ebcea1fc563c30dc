"""The `paca` command line. Each package contributes its subcommands through `register(app)`.

Subcommand modules import nothing heavy at module level, so `paca --help` stays fast and
`paca serve` with the ONNX Runtime backend never imports torch.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    help="PaCa Serve: build, export and serve PaCa-ViT models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# Packages that add subcommands; a module that does not exist yet is skipped.
SUBCOMMAND_MODULES = ("models.cli", "export.cli", "service.serve_cli", "demo.cli", "loadtest.cli")


@app.command()
def version() -> None:
    """Print the PaCa Serve version."""
    from importlib.metadata import version as pkg_version

    typer.echo(pkg_version("paca-serve"))


def _register_subcommands() -> None:
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        module.register(app)


_register_subcommands()


def main() -> None:
    app()
