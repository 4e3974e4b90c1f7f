"""flows/cli/output.py: the results table's width off a terminal (COLUMNS, else 80), on a
terminal the console's own; lines printed as written, never as markup."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from flows.cli import output


@pytest.mark.parametrize(("columns", "width"), [
    (None, 80), ("", 80), ("100", 100), ("81", 81), ("1", 1), ("0", 80), ("-5", 80),
    ("12a", 80), ("3.5", 80), (" 90", 80)])
def test_off_a_terminal_the_results_are_as_wide_as_columns_says_else_80(
        monkeypatch: pytest.MonkeyPatch, columns: str | None, width: int) -> None:
    monkeypatch.setattr(output, "console", Console(file=io.StringIO(), width=160,
                                                   force_terminal=False))
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert output.results_width() == width


def test_on_a_terminal_the_results_are_as_wide_as_the_terminal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "console", Console(file=io.StringIO(), width=133,
                                                   force_terminal=True))
    monkeypatch.setenv("COLUMNS", "100")
    assert output.results_width() == 133


def test_each_result_is_printed_at_the_results_width_and_a_line_as_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    text = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=text, width=160, force_terminal=False,
                                                   color_system=None))
    monkeypatch.setenv("COLUMNS", "12")
    output.print_results(["one two three four five", "six"])
    assert [line.rstrip() for line in text.getvalue().splitlines()] == \
        ["one two", "three four", "five", "six"]
    text.truncate(0), text.seek(0)
    long = "benchmark[pi] [bold]x[/bold] " + "y" * 200
    output.say(long)
    assert text.getvalue() == long + "\n"
