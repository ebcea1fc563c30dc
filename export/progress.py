"""A rich progress display driven by the step callbacks of `export_onnx` and the engine builder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


@contextmanager
def step_progress(title: str, total_steps: int, console: Console | None = None) -> Iterator[Callable[[str], None]]:
    """Yields `report(message)`: each call completes the previous step and shows the new one."""
    console = console or Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        task = progress.add_task(title, total=total_steps)
        started = False

        def report(message: str) -> None:
            nonlocal started
            if started:
                progress.advance(task)
            started = True
            progress.update(task, description=f"{title}: {message}")

        yield report
        progress.update(task, completed=total_steps)
