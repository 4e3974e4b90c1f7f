"""tasks/release/view.py: the cells of ``edgeflow status``, each taken from the field it
names: the board's state over edgeflow's record, the current release's health (not the
previous one's), and the figures as they were measured."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.release.view import status_rows, status_table

CURRENT = {"release": "20261121T000000000000Z-tflite-int8", "variant": "tflite-int8",
           "mlflow": {"version": 7},
           "health": {"passed": True, "accuracy": 0.91234, "latency_p90_ms": 1.23456,
                      "checked_at": 86400 * 365 + 3600 * 5 + 60 * 7}}
PREVIOUS = {"release": "20261120T000000000000Z-onnx-fp32", "variant": "onnx-fp32",
            "mlflow": None, "health": {"passed": False, "reasons": ["old"]}}
RECORDED = {"release": "20261119T000000000000Z-onnx-int8", "variant": "onnx-int8",
            "mlflow": {"version": 2}, "health": {"passed": True}}


def test_a_board_is_shown_from_its_own_state_not_the_record() -> None:
    state = {"device": "pi", "board": {"current": CURRENT, "previous": PREVIOUS},
             "record": {"current": RECORDED, "previous": None},
             "drift": "the board runs a, edgeflow recorded b"}
    assert status_rows(state) == [
        "pi", "tflite-int8 (20261121T000000000000Z-tflite-int8, MLflow v7)",
        "onnx-fp32 (20261120T000000000000Z-onnx-fp32)",
        "passed, accuracy 0.912, p90 1.235 ms 1971-01-01 05:07 UTC",
        "the board runs a, edgeflow recorded b"]


def test_a_kind_without_a_state_of_its_own_is_shown_from_the_record() -> None:
    state = {"device": "esp32", "board": None, "record": {"current": RECORDED,
                                                           "previous": CURRENT},
             "drift": None}
    assert status_rows(state) == [
        "esp32", "onnx-int8 (20261119T000000000000Z-onnx-int8, MLflow v2)",
        "tflite-int8 (20261121T000000000000Z-tflite-int8, MLflow v7)", "passed", "none"]


def test_an_unreachable_board_shows_why_in_the_drift_column() -> None:
    state = {"device": "pi", "board": None, "record": {"current": RECORDED, "previous": None},
             "drift": None, "error": "pi: connection refused"}
    assert status_rows(state) == ["pi", "unreachable", "-", "-", "pi: connection refused"]


@pytest.mark.parametrize(("current", "cells"), [
    (None, ["-", "-"]),
    ({"release": "r1"}, ["missing (r1)", "-"]),  # its folder gone: no variant, no health
    ({"release": "r1", "variant": "v", "mlflow": {"version": None},
      "health": {"passed": False, "reasons": ["accuracy 0.4 < 0.5", "p90 9 ms > 5 ms"],
                 "accuracy": 0.4, "latency_p90_ms": 9.0}},
     ["v (r1)", "FAILED: accuracy 0.4 < 0.5; p90 9 ms > 5 ms, accuracy 0.400, p90 9.000 ms"]),
    ({"release": "r1", "variant": "v", "health": {"passed": True, "accuracy": "n/a",
                                                  "checked_at": "yesterday"}},
     ["v (r1)", "passed"]),
    ({"release": "r1", "variant": "v", "health": {"passed": True, "accuracy": 1,
                                                  "checked_at": 0.0}},
     ["v (r1)", "passed, accuracy 1.000, p90 0.000 ms 1970-01-01 00:00 UTC"]),
])
def test_each_cell_of_a_release_says_what_its_fields_hold(current: Any, cells: list[str]) -> None:
    row = status_rows({"device": "pi", "board": {"current": current, "previous": None},
                       "record": {}, "drift": None})
    assert [row[1], row[3]] == cells and row[2] == "-"


def test_the_table_shows_cells_as_text_not_markup() -> None:
    from rich.console import Console

    console = Console(width=300, record=True)
    console.print(status_table([{"device": "pi[bold]", "board": None, "drift": None,
                                 "record": {"current": {"release": "r[1]", "variant": "v"},
                                            "previous": None}}]))
    text = console.export_text()
    assert [str(column.header) for column in status_table([]).columns] == [
        "device", "current", "previous", "last health check", "drift"]
    assert "pi[bold]" in text and "v (r[1])" in text
