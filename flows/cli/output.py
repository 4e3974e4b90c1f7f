"""What the commands print on the terminal: one console, lines that are never read as
markup, and the results table laid out in the terminal's columns."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console

console = Console()
if not console.is_terminal:  # logs and pipes: rich would squeeze the table into 80 columns
    console = Console(width=160)


def results_width() -> int:
    """The columns the results table is laid out in: the terminal's; off a terminal (a
    pipe, a CI log) ``COLUMNS``, else 80. At 120 or fewer it is the compact table with
    the reasons listed under it (:func:`tasks.select.report.terminal.terminal_summary`)."""
    if console.is_terminal:
        return console.width
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 80


def print_results(renderables: list[Any]) -> None:
    width = results_width()
    for renderable in renderables:
        console.print(renderable, width=width)


def say(text: str, style: str | None = None) -> None:
    """One line of output; its text is never read as rich markup ("benchmark[pi]")."""
    # soft_wrap: a long line (a path) stays one line, whatever the terminal width.
    console.print(text, markup=False, highlight=False, style=style, soft_wrap=True)
