"""Console output that stays readable in a terminal, a pipe and a log file."""

from __future__ import annotations

from rich.console import Console


def wide_console(console: Console | None = None, width: int = 160) -> Console:
    """``console`` (default: stdout), but at least ``width`` columns when it is a pipe or a log file,
    where rich would assume 80 and squeeze the tables."""
    console = console or Console()
    if console.is_terminal or console.width >= width:
        return console
    return Console(width=width, file=console.file)
