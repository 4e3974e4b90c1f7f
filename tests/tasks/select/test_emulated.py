"""Emulated boards in selection (issue 28): their rows are marked ``emulated`` with the
emulation, noted in every view, their timings marked in the tables, and their device gets
no recommendation (nothing to release) unless ``select.include_emulated``; the verdict
says so without failing the run. Toy records, no board."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from tasks.config import Farm, RequirementParams, SelectParams, load_farm
from tasks.core.contracts.summary import Summary
from tasks.core.files import write_json
from tasks.select import summarise, verdict
from tasks.select.emulated import excluded_devices, not_recommended
from tasks.select.report.cells import COLUMNS, row_cells
from tasks.select.report.html import render_html
from tasks.select.report.markdown import render_markdown
from tasks.select.report.terminal import terminal_summary
from tests.tasks.select.summaries import summary_row

FARM = """\
devices:
  local: {threads: 1}
  pi5-emu: {threads: 1, emulation: qemu-user}
"""
REASON = ("emulated (qemu-user): not recommended; set select.include_emulated to "
          "recommend on it")
NOTE = "emulated (qemu-user): its timings are the emulator's, not the hardware's"


def record(device: str, variant: str = "onnx-fp32", p90: float = 2.0,
           **marks: Any) -> dict[str, Any]:
    """A result record as benchmark writes it (``marks``: ``emulated``, ``emulation``)."""
    return {
        "variant": variant, "device": device, "format": variant.split("-")[0],
        "precision": "fp32", "source": "base", "runtime": "onnxruntime", "size_bytes": 10_000,
        "sha256": "0" * 64, "threads": 1, "device_facts": {"arch": "aarch64"},
        "declared_execution_precision": "f32", **marks, "status": "ok", "error": None,
        "harness": {
            "status": "ok", "error": None,
            "runtime": {"name": "onnxruntime", "version": "1.32.0",
                        "requested": "onnxruntime", "execution_precision": "f32"},
            "latency_ms": {"p50": 1.0, "p90": p90, "p99": 3.0, "mean": 1.2, "std": 0.1,
                           "min": 0.5, "max": 6.0},
            "throughput_fps": 800.0, "accuracy": 0.9, "peak_rss_mb": 50.0, "load_ms": 12.5,
            "first_inference_ms": 1.5, "runs": 100}}


EMULATED = {"emulated": True, "emulation": "qemu-user"}


def project(tmp_path: Path, emulated_p90: float = 2.0) -> tuple[Farm, Path, Path]:
    """farm.yaml with a physical and an emulated device, a passing result on each, and
    the reference: (farm, results folder, reference file)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "farm.yaml").write_text(FARM, encoding="utf-8")
    results = tmp_path / "results"
    write_json(results / "local" / "onnx-fp32.json", record("local"))
    write_json(results / "pi5-emu" / "onnx-fp32.json",
               record("pi5-emu", p90=emulated_p90, **EMULATED))
    reference = write_json(tmp_path / "reference.json", {"test_correct": [1] * 9 + [0]})
    return load_farm(tmp_path / "farm.yaml"), results, reference


def summary_of_project(tmp_path: Path, include: bool, emulated_p90: float = 2.0) -> Summary:
    farm, results, reference = project(tmp_path, emulated_p90)
    return summarise(RequirementParams(max_accuracy_drop=None), farm, results, reference,
                     select_params=SelectParams(include_emulated=include))


def test_an_emulated_boards_rows_are_marked_and_noted_and_a_physical_ones_unchanged(
        tmp_path: Path) -> None:
    summary = summary_of_project(tmp_path, include=False)
    rows = {row.device: row for row in summary.results}
    assert (rows["pi5-emu"].emulated, rows["pi5-emu"].emulation) == (True, "qemu-user")
    assert rows["pi5-emu"].notes == [NOTE] and rows["pi5-emu"].status == "pass"
    physical = rows["local"].document()
    assert "emulated" not in physical and "emulation" not in physical
    assert rows["local"].notes == []


def test_an_emulated_device_gets_no_recommendation_unless_opted_in(tmp_path: Path) -> None:
    summary = summary_of_project(tmp_path, include=False)
    assert summary.recommendations == {"local": "onnx-fp32", "pi5-emu": None}
    assert summary.excluded == {"pi5-emu": REASON}
    assert summary.why_recommended is not None
    assert summary.why_recommended["pi5-emu"] == REASON
    assert summary.why_none("pi5-emu") == REASON
    assert summary.why_none("local") == "no variant meets the requirements"
    # Not a failure: the run is ok, and its line says which devices and how to opt in.
    judged = verdict(summary)
    assert judged.ok
    assert judged.message.endswith(
        "recommended: local: onnx-fp32 | not recommended (emulated): pi5-emu; set "
        "select.include_emulated to recommend on them")

    opted = summary_of_project(tmp_path / "opted", include=True)
    assert opted.recommendations == {"local": "onnx-fp32", "pi5-emu": "onnx-fp32"}
    assert "excluded" not in opted.document() and opted.excluded is None
    assert verdict(opted).message.endswith("recommended: local: onnx-fp32, pi5-emu: onnx-fp32")


def test_a_physical_device_without_a_passing_variant_still_fails_the_verdict(
        tmp_path: Path) -> None:
    farm, results, reference = project(tmp_path)
    summary = summarise(RequirementParams(max_accuracy_drop=None, max_latency_p90_ms=1.0),
                        farm, results, reference)
    assert summary.recommendations == {"local": None, "pi5-emu": None}
    judged = verdict(summary)
    assert not judged.ok
    assert "no variant meets the requirements on: local |" in judged.message
    assert "not recommended (emulated): pi5-emu;" in judged.message


def test_excluded_devices_name_each_emulated_device_once_and_none_when_opted_in() -> None:
    rows = [summary_row("a", "pi", **EMULATED), summary_row("b", "pi", **EMULATED),
            summary_row("a", "x86"), summary_row("a", "vm", emulated=True,
                                                 emulation="qemu-system")]
    assert excluded_devices(rows, SelectParams()) == {
        "pi": REASON, "vm": not_recommended("qemu-system")}
    assert not_recommended("qemu-system") == (
        "emulated (qemu-system): not recommended; set select.include_emulated to "
        "recommend on it")
    assert excluded_devices(rows, SelectParams(include_emulated=True)) == {}


def test_every_timing_of_an_emulated_row_is_marked_in_the_cells() -> None:
    timed = {"p50": 1.0, "p90": 2.25, "p99": 3.5, "mean": 1.2}
    cells = dict(zip(COLUMNS, row_cells(summary_row(
        "onnx-fp32", "pi", accuracy=0.9, size_bytes=2048, latency_ms=timed,
        throughput_fps=833.3, peak_rss_mb=50.4, **EMULATED))))
    assert {key: cells[key] for key in ("p50 ms", "p90 ms", "p99 ms", "fps", "e2e p90 ms",
                                        "size KB", "RSS MB")} == {
        "p50 ms": "1.000 emu", "p90 ms": "2.250 emu", "p99 ms": "3.500 emu", "fps": "833 emu",
        "e2e p90 ms": "—", "size KB": "2.0", "RSS MB": "50"}
    physical = dict(zip(COLUMNS, row_cells(summary_row("onnx-fp32", "pi", latency_ms=timed))))
    assert physical["p90 ms"] == "2.250"


def test_the_reports_say_why_and_mark_the_latency(tmp_path: Path) -> None:
    summary = summary_of_project(tmp_path, include=False)
    markdown = render_markdown(summary, [])
    assert f"- **pi5-emu**: {REASON}\n" in markdown
    assert "| pi5-emu | onnx-fp32 | pass | f32 |" in markdown
    assert "| 1.000 emu | 2.000 emu |" in markdown and "| 1.000 | 2.000 |" in markdown
    assert "a timing marked emu is an emulated board's" in markdown
    page = render_html(summary, [])
    section = page[page.index("<h2>pi5-emu</h2>"):]
    assert f"<strong>{REASON[0].upper()}{REASON[1:]}.</strong>" in section
    assert "Why:" not in section[:section.index("</p>")]


def test_the_compact_terminal_table_marks_the_latency_within_80_columns(tmp_path: Path) -> None:
    summary = summary_of_project(tmp_path, include=False, emulated_p90=123456.789)
    console = Console(width=80, record=True, color_system=None)
    for renderable in terminal_summary(summary, 80):
        console.print(renderable)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    lines = text.splitlines()
    [physical] = [line for line in lines if line.startswith(" 1  local")]
    [emulated] = [line for line in lines if line.startswith(" 2  pi5-emu")]
    assert physical.split()[-2:] == ["2.000", "9.8"]
    assert emulated.split()[-3:] == ["123456.789", "emu", "9.8"]
    assert f"[2] pi5-emu onnx-fp32: {NOTE}" == " ".join(text[text.index("[2]"):].split())
