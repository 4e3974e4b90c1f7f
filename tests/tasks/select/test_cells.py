"""The cells every view of a summary writes: a measured and an unmeasured row, the
reference with and without its number of images, a device's stated requirements."""

from __future__ import annotations

from tasks.core.contracts.summary import Reference
from tasks.select.report.cells import (COLUMNS, reference_line, row_cells, runs_on,
                                       stated_requirements)
from tests.tasks.select.summaries import summary_of, summary_row


def test_a_measured_row_and_an_unmeasured_one() -> None:
    measured = summary_row(
        "onnx-fp32", "pi", "pass", execution_precision="f32", accuracy=0.9,
        accuracy_samples=0, accuracy_drop=0.0123, size_bytes=20_480,
        latency_ms={"p50": 1.0, "p90": 2.25, "p99": 3.5, "mean": 1.2},
        throughput_fps=833.3, peak_rss_mb=50.4)
    assert dict(zip(COLUMNS, row_cells(measured))) == {
        "device": "pi", "variant": "onnx-fp32", "status": "pass", "exec": "f32",
        "accuracy": "0.9000", "drop": "1.23%", "size KB": "20.0", "p50 ms": "1.000",
        "p90 ms": "2.250", "p99 ms": "3.500", "fps": "833", "e2e p90 ms": "—", "RSS MB": "50",
        "energy mJ": "—"}
    skipped = row_cells(summary_row("tflite-int8", "pi", "skipped"))
    assert skipped[:3] == ["pi", "tflite-int8", "skipped"] and set(skipped[3:]) == {"—"}


def test_the_reference_says_its_images_when_it_knows_them() -> None:
    assert reference_line(Reference(accuracy=0.9)) == "0.9000"
    assert reference_line(Reference(accuracy=0.9, samples=360)) == (
        "0.90 [0.86, 0.93] on 360 test images")


def test_requirements_leave_the_unset_out_and_read_the_order() -> None:
    assert stated_requirements({"max_latency_p90_ms": 5.0, "min_fps": None,
                                "rank_by": ["latency_p90_ms", "accuracy"]}) == (
        "max_latency_p90_ms=5.0, rank_by=latency_p90_ms > accuracy")
    assert stated_requirements({"min_fps": None}) == "none"


def test_runs_on_lists_every_variant_with_the_devices_it_passes_on() -> None:
    rows = [summary_row("a", "pi"), summary_row("b", "pi", "fail"), summary_row("a", "board")]
    assert runs_on(summary_of(rows, {})) == {"a": ["pi", "board"], "b": []}


def test_runs_on_counts_only_passes_not_skipped_or_errors() -> None:
    # One row per status: only the pass is a device the variant runs on (a skipped or
    # errored row is not a "passes on", nor is a fail).
    rows = [summary_row("a", "pi"), summary_row("a", "mcu", "skipped"),
            summary_row("a", "x", "error"), summary_row("b", "pi", "fail")]
    assert runs_on(summary_of(rows, {})) == {"a": ["pi"], "b": []}


def test_a_zero_requirement_is_stated() -> None:
    # No drop allowed, no memory headroom: a 0 is a requirement, only None is unset.
    assert stated_requirements({"max_accuracy_drop": 0.0, "min_fps": 0, "max_size_kb": None}) == (
        "max_accuracy_drop=0.0, min_fps=0")


def test_an_energy_cell_is_measured_plain_and_estimated_marked() -> None:
    from tasks.select.report.cells import energy_cell

    assert energy_cell(summary_row("a", energy_mj=1.23456, energy_source="measured")) == "1.235"
    assert energy_cell(summary_row("a", energy_mj=50.0, energy_source="estimated")) == "~50 est"
    assert energy_cell(summary_row("a")) == "—"
