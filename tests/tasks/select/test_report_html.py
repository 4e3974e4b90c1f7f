"""report.html from a hand-made summary: self-contained (every image a data: URI of the
very PNG written, nothing to fetch), a section per device that answers "which variant
and why", and every text from the summary escaped."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np

from tasks.select.plots import write_plots
from tasks.select.report.html import render_html
from tests.tasks.select.test_plots import row, summary


def test_the_page_embeds_every_plot_and_fetches_nothing(tmp_path: Path) -> None:
    document = summary()
    plots = write_plots(document, {("board", "tflite-int8"): np.array([0.4, 0.5])}, tmp_path)
    page = render_html(document, plots)
    sources = re.findall(r'src="([^"]*)"', page)
    assert [base64.b64decode(source.removeprefix("data:image/png;base64,"))
            for source in sources] == [plot.path.read_bytes() for plot in plots]
    assert not re.findall(r'(?:href|src)="(?!data:)', page)
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_each_device_says_which_variant_and_why_in_farm_order(tmp_path: Path) -> None:
    document = summary().model_copy(
        update={"why_recommended": {"board": "best latency_p90_ms among 2 passing variants"}})
    page = render_html(document, write_plots(document, {}, tmp_path))
    board, mcu = page.index("<h2>board</h2>"), page.index("<h2>mcu</h2>")
    assert board < mcu < page.index("<h2>Every device and variant</h2>")
    section = page[board:mcu]
    assert "Recommended: <code>tflite-int8</code>" in section
    assert "Why: best latency_p90_ms among 2 passing variants" in section
    assert "Pareto frontier (accuracy, p90, size): <code>tflite-fp32</code>, " in section
    assert 'alt="board: accuracy against p90 latency"' in section
    assert "No latency was measured on mcu" in page[mcu:]
    assert "<li><code>tflite-int8</code>: board</li>" in page
    assert "<li><code>onnx-fp32</code>: no device</li>" in page
    assert ("<li><strong>board</strong>: max_latency_p90_ms=20.0, max_accuracy_drop=0.02</li>"
            in page)
    assert page.count('<tr class="fail">') == 1 and page.count('<tr class="pass">') == 3


def test_texts_from_devices_are_escaped(tmp_path: Path) -> None:
    document = summary()
    document.results.append(row("x", "tflite", 1.0, 0.9, status="fail").model_copy(
        update={"reasons": ['<img src="http://evil/x.png"><script>alert(1)</script>']}))
    document.recommendations["board"] = None
    page = render_html(document, [])
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "http://evil" not in re.findall(r'src="([^"]*)"', page)
    assert "<strong>No variant meets the requirements.</strong>" in page


def test_every_result_cell_has_its_column_class_and_the_reverse_view_lists_every_device() -> None:
    document = summary()
    document.results.append(row("tflite-int8", "tflite", 0.6, 0.94, device="mcu"))
    page = render_html(document, [])
    assert "<li><code>tflite-int8</code>: board, mcu</li>" in page.splitlines()
    rows = [line for line in page.splitlines() if line.startswith("<tr class=")]
    assert len(rows) == 6
    for line in rows:  # device, variant, status, exec are text; the 9 numbers are not
        classes = re.findall(r'<td class="([^"]*)">', line)
        assert classes == ["text", "text", "text status", "text", *[""] * 10, "text"], line


def test_a_device_with_estimated_latencies_says_they_are_estimates_not_measured() -> None:
    from tests.tasks.select.summaries import summary_of, summary_row

    estimated = summary_row("tflm-int8", device="nano", estimated_latency_ms=12.5)
    page = render_html(summary_of([estimated], {"nano": "tflm-int8"}), [])
    assert ("No latency was measured on nano (its latencies are estimates from the "
            "instructions its emulated core counted, marked ~ est in the table, not "
            "measurements)" in page)
    assert "~12.500 est" in page
