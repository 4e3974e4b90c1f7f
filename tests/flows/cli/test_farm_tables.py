"""The farm commands' tables: one row per device, its facts in the columns' order,
unknown facts empty, and nothing a device says read as rich markup."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from flows.cli.farm_tables import PROBE_COLUMNS, probe_table, setup_table
from tasks.core.errors import DeviceError
from tasks.farm.probe import DeviceProbe
from tasks.farm.setup import SetupOutcome


def cells(table: Table) -> list[list[str]]:
    """The table's rows, cell by cell, as rich renders them (markup applied)."""
    columns = [[Console().render_str(str(cell)).plain for cell in column.cells]
               for column in table.columns]
    return [list(row) for row in zip(*columns)]


def test_a_probe_row_holds_the_facts_in_column_order_and_unknown_ones_empty() -> None:
    facts = {"arch": "aarch64", "os": "Linux 6.1", "python": "3.11.2", "cpu": "Cortex-A76",
             "cores": 4, "cpu_mhz": 1500, "cpu_max_mhz": 2400, "memory_mb": 8000,
             "memory_available_mb": 6100, "temperature_c": 51.5, "thermal_throttle_events": 3}
    table = probe_table(Path("farm.yaml"), [
        DeviceProbe("pi5", True, facts, {"onnxruntime": "1.20.1", "tflite": "2.18"},
                    meters=("pi5-pmic (every 0.1 s, assumed)",)),
        DeviceProbe("bare", True, {"arch": "x86_64", "cpu_mhz": 1000})])
    assert table.title == "farm: farm.yaml"
    assert [column.header for column in table.columns] == list(PROBE_COLUMNS)
    assert cells(table) == [
        ["pi5", "yes", "aarch64", "Linux 6.1", "3.11.2", "Cortex-A76", "4", "1500 (2400)",
         "8000 (6100)", "51.5", "3 events", "onnxruntime 1.20.1, tflite 2.18",
         "pi5-pmic (every 0.1 s, assumed)"],
        ["bare", "yes", "x86_64", "", "", "", "", "", "", "", "", "", "none"]]


def test_the_meters_column_is_left_out_where_no_board_has_a_meter() -> None:
    table = probe_table(Path("farm.yaml"), [
        DeviceProbe("bare", True, {"arch": "x86_64"}, {"onnxruntime": "1.20.1"})])
    assert [column.header for column in table.columns] == list(PROBE_COLUMNS[:-1])
    assert cells(table) == [["bare", "yes", "x86_64", "", "", "", "", "", "", "", "",
                             "onnxruntime 1.20.1"]]


def test_an_unreachable_device_says_why_and_its_words_are_not_markup() -> None:
    table = probe_table(Path("f.yaml"), [DeviceProbe(
        "ghost[1]", False, error="[bold]no route[/bold] to host", failure=DeviceError)])
    assert cells(table)[0][:2] == ["ghost[1]", "no: [bold]no route[/bold] to host"]


def test_a_setup_row_says_failed_changed_or_nothing_changed() -> None:
    table = setup_table(Path("farm.yaml"), [
        SetupOutcome("a", changed=True, actions=("created venv", "installed numpy"),
                     runtimes={"onnxruntime": "1.20.1"}),
        SetupOutcome("b"),
        SetupOutcome("c", error="pip failed", failure=DeviceError)])
    assert table.title == "farm setup: farm.yaml"
    assert cells(table) == [
        ["a", "changed", "created venv; installed numpy", "onnxruntime 1.20.1"],
        ["b", "nothing changed", "", ""],
        ["c", "failed: pip failed", "", ""]]
