"""The report's plots on a hand-made summary: what each one draws (log axes, colours per
runtime, the starred recommendation, hollow failures, labels that never collide), not
only that a PNG came out."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.colors import to_hex, to_rgba

from tasks.select.plots import (RUNTIME_COLOURS, SPARE_COLOURS, Drawn, draw_accuracy_size,
                              draw_heatmap, draw_latency, draw_pareto, heatmap_cells,
                              place_labels, runtime_colour, write_plots)
from tasks.core.contracts.summary import Summary, SummaryRow
from tests.tasks.select.summaries import summary_of, summary_row


def row(variant: str, runtime: str, p90: float | None, accuracy: float | None,
        status: str = "pass", device: str = "board", size_kb: float = 100.0) -> SummaryRow:
    timed = p90 is not None
    return summary_row(
        variant, device, status, runtime=runtime, accuracy=accuracy,
        size_bytes=int(size_kb * 1024),
        accuracy_interval=[accuracy - 0.01, accuracy + 0.01] if accuracy else None,
        latency_ms={"p50": p90 / 2, "p90": p90, "p99": p90 * 2, "mean": p90 / 2}
        if timed else None,
        latency_ci95_ms={"p50": [p90 / 2.1, p90 / 1.9], "p90": [p90 * 0.95, p90 * 1.05]}
        if timed else None,
        reasons=[] if status == "pass" else ["p90 latency 40 ms > max_latency_p90_ms 20"])


def summary() -> Summary:
    results = [row("tflite-fp32", "tflite", 2.0, 0.95, size_kb=400),
               row("tflite-int8", "tflite", 0.5, 0.94, size_kb=100),
               row("onnx-fp32", "onnxruntime", 40.0, 0.95, status="fail", size_kb=390),
               row("openvino-fp32", "openvino", None, None, status="skipped"),
               row("tflm-int8", "tflite-micro", None, 0.93, device="mcu", size_kb=90)]
    return summary_of(results, {"board": "tflite-int8", "mcu": "tflm-int8"},
                      reference_accuracy=0.95, rank_by="latency_p90_ms",
                      requirements={"board": {"max_latency_p90_ms": 20.0,
                                              "max_accuracy_drop": 0.02},
                                    "mcu": {"max_accuracy_drop": 0.05}},
                      pareto={"board": ["tflite-fp32", "tflite-int8"], "mcu": ["tflm-int8"]})


def close(drawn: Drawn) -> None:
    import matplotlib.pyplot as plt

    plt.close(drawn.figure)


def scatter_points(axes: Any) -> list[tuple[tuple[float, float], Any, Any, str]]:
    """Every plotted scatter point: (x, y), face colour, edge colour, marker path size."""
    points = []
    for collection in axes.collections:
        offsets = collection.get_offsets()
        if len(offsets) != 1 or not hasattr(collection, "get_sizes") or not len(
                collection.get_sizes()):
            continue
        faces, edges = collection.get_facecolors(), collection.get_edgecolors()
        points.append((tuple(offsets[0]), faces[0] if len(faces) else None,
                       edges[0] if len(edges) else None, collection.get_sizes()[0]))
    return points


def test_runtimes_keep_their_colour_and_unknown_ones_take_spares_in_name_order() -> None:
    assert runtime_colour("openvino", []) == RUNTIME_COLOURS["openvino"]
    runtimes = ["zeta-rt", "alpha-rt", "tflite"]
    assert runtime_colour("alpha-rt", runtimes) == SPARE_COLOURS[0]
    assert runtime_colour("zeta-rt", runtimes) == SPARE_COLOURS[1]
    assert len(set(RUNTIME_COLOURS.values()) | set(SPARE_COLOURS)) == (
        len(RUNTIME_COLOURS) + len(SPARE_COLOURS))


def test_labels_never_overlap_each_other_other_points_or_the_edge() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    axes.set_xscale("log")
    rng = np.random.default_rng(3)
    # 30 points in one crowded block, as the old plot had them, and two far apart.
    points = [(float(x), float(y), f"variant-{i:02d}") for i, (x, y) in enumerate(
        zip(rng.uniform(0.05, 0.08, 30), rng.uniform(0.94, 0.95, 30)))]
    points += [(5.0, 0.90, "far-right"), (0.01, 0.99, "top-left")]
    axes.scatter([p[0] for p in points], [p[1] for p in points])
    axes.set_xlim(0.005, 20)
    axes.set_ylim(0.88, 1.0)
    figure.tight_layout()
    placed = place_labels(axes, points)
    renderer = figure.canvas.get_renderer()
    boxes = {name: label.get_window_extent(renderer) for name, label in placed.items()}
    assert "far-right" in placed and "top-left" in placed
    assert 3 <= len(placed) < 32, "some of the crowd fit, not all of it"
    names = sorted(boxes)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            assert not boxes[first].overlaps(boxes[second]), (first, second)
    inside = axes.get_window_extent(renderer)
    for name, box in boxes.items():
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, name
        for x, y, other in points:
            if other != name:
                cx, cy = axes.transData.transform((x, y))
                assert not (box.x0 - 6 < cx < box.x1 + 6 and box.y0 - 6 < cy < box.y1 + 6), (
                    name, other)
    # Alone, every label is placed, with the text it was given.
    plt.close(figure)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.set_xlim(0, 10)
    axes.set_ylim(0, 10)
    placed = place_labels(axes, [(2, 2, "a"), (7, 7, "b")], {"a": "a (12 KB)"})
    assert {name: label.get_text() for name, label in placed.items()} == {"a": "a (12 KB)",
                                                                        "b": "b"}
    plt.close(figure)


def test_the_pareto_plot_stars_the_recommendation_on_a_log_latency_axis() -> None:
    drawn = draw_pareto(summary(), "board")
    axes = drawn.axes
    assert axes.get_xscale() == "log"
    points = scatter_points(axes)
    stars = [p for p in points if p[3] == 260]
    assert [p[0] for p in stars] == [(0.5, 0.94)], "one star, on tflite-int8"
    by_place = {p[0]: p for p in points if p[3] != 260}
    # Passing points are filled with their runtime's colour; the failing one is hollow.
    assert to_hex(by_place[(2.0, 0.95)][1]) == RUNTIME_COLOURS["tflite"]
    assert by_place[(40.0, 0.95)][1] is None, "failing onnx-fp32 is hollow: no face"
    assert to_hex(by_place[(40.0, 0.95)][2]) == RUNTIME_COLOURS["onnxruntime"]
    # The frontier's points have a black ring.
    assert tuple(by_place[(2.0, 0.95)][2]) == to_rgba("black")
    # The requirements: the p90 limit and the accuracy floor (0.95 less 2%).
    vertical = [line.get_xdata()[0] for line in axes.lines if line.get_xdata()[0] ==
                line.get_xdata()[1]]
    horizontal = [line.get_ydata()[0] for line in axes.lines if line.get_ydata()[0] ==
                  line.get_ydata()[1]]
    assert 20.0 in vertical and pytest.approx(0.931) in horizontal
    assert "1 without a latency" in axes.get_title()  # the skipped openvino row
    assert set(drawn.labels) == {"tflite-int8", "tflite-fp32", "onnx-fp32"}
    assert drawn.labels["tflite-int8"].get_text() == "tflite-int8 (100 KB)"
    close(drawn)


MIN_ACCURACIES = (None, 0.0, 0.5, 0.86, 0.9, 0.95)
# Against a 0.9 reference: floors of 0.9, 0.882, 0.855, 0.81; none.
DROPS = (None, 0.0, 0.02, 0.05, 0.1)


@pytest.mark.parametrize("min_accuracy", MIN_ACCURACIES)
@pytest.mark.parametrize("drop", DROPS)
def test_the_plotted_floor_is_the_higher_of_the_two_and_the_health_checks(
        min_accuracy: float | None, drop: float | None) -> None:
    """The Pareto plot's accuracy floor is the higher of ``min_accuracy`` and the
    reference less ``max_accuracy_drop`` (relative), each higher in turn and equal once
    (0.9 and no drop), zero a floor and not none; the same floor the release's health
    check holds the device to (tasks/release/bundle.py, a second copy of the rule)."""
    from tasks.release.bundle import accuracy_floor
    from tasks.select.plots import _accuracy_floor

    stated = {"min_accuracy": min_accuracy, "max_accuracy_drop": drop,
              "max_latency_p90_ms": 5.0}
    summary = Summary.model_construct(reference_accuracy=0.9, requirements={
        "board": stated, "other": {"min_accuracy": 0.99, "max_accuracy_drop": 0.0}})
    floors = [value for value in (min_accuracy, None if drop is None else 0.9 * (1 - drop))
              if value is not None]
    expected = max(floors) if floors else None
    assert _accuracy_floor(summary, "board") == expected
    assert accuracy_floor(summary, "board") == expected


@pytest.mark.parametrize(("requirements", "floor"), [
    ({"min_accuracy": 0.94, "max_accuracy_drop": 0.02}, 0.94),  # above 0.95 less 2% (0.931)
    ({"min_accuracy": 0.92, "max_accuracy_drop": 0.02}, 0.931),
])
def test_the_pareto_plot_draws_the_floor_that_binds(requirements: dict, floor: float) -> None:
    board = summary()
    board.requirements["board"] = {"max_latency_p90_ms": 20.0, **requirements}
    drawn = draw_pareto(board, "board")
    horizontal = [line.get_ydata()[0] for line in drawn.axes.lines
                  if line.get_ydata()[0] == line.get_ydata()[1]]
    assert horizontal == [pytest.approx(floor, abs=1e-12)]
    close(drawn)


def test_latency_violins_are_sorted_by_median_from_the_raw_runs() -> None:
    rng = np.random.default_rng(0)
    latencies = {("board", "tflite-fp32"): rng.lognormal(math.log(2.0), 0.1, 5000),
                 ("board", "tflite-int8"): rng.lognormal(math.log(0.5), 0.1, 200_000),
                 ("board", "onnx-fp32"): np.empty(0)}
    drawn = draw_latency(summary(), "board", latencies)
    names = [label.get_text() for label in drawn.axes.get_yticklabels()]
    assert names == ["tflite-int8", "tflite-fp32"], "fastest on top; nothing for no runs"
    medians = sorted(p[0][0] for p in scatter_points(drawn.axes))
    assert medians == pytest.approx([math.log10(0.5), math.log10(2.0)], abs=0.01)
    assert drawn.axes.xaxis.get_major_formatter()(math.log10(0.5), 0) == "0.5"
    close(drawn)


def test_the_heat_map_writes_each_p90_and_status_and_greys_what_was_not_timed() -> None:
    variants, devices, values, texts = heatmap_cells(summary())
    assert devices == ["board", "mcu"]
    assert variants == ["tflite-fp32", "tflite-int8", "onnx-fp32", "openvino-fp32", "tflm-int8"]
    assert values[0, 0] == pytest.approx(math.log10(2.0))
    assert texts[0][0] == "2 ms\npass" and texts[2][0] == "40 ms\nFAIL"
    assert texts[3][0] == "skipped" and math.isnan(values[3, 0])
    assert texts[4][1] == "pass" and math.isnan(values[4, 1])
    assert texts[0][1] == "", "no result there"
    drawn = draw_heatmap(summary())
    written = {text.get_text(): text.get_color() for text in drawn.axes.texts}
    assert written["40 ms\nFAIL"] == "red" and written["2 ms\npass"] != "red"
    close(drawn)


def test_the_heat_map_marks_an_emulated_boards_p90() -> None:
    emulated = summary_row("onnx-fp32", "pi-emu", "pass", emulated=True, emulation="qemu-user",
                           latency_ms={"p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1.0})
    _, devices, _, texts = heatmap_cells(summary().model_copy(
        update={"results": [*summary().results, emulated]}))
    assert devices == ["board", "mcu", "pi-emu"]
    assert texts[2] == ["40 ms\nFAIL", "", "2 ms emu\npass"]


def test_accuracy_against_size_labels_each_variant_once() -> None:
    drawn = draw_accuracy_size(summary())
    assert drawn.axes.get_xscale() == "log"
    assert set(drawn.labels) == {"tflite-fp32", "tflite-int8", "onnx-fp32", "tflm-int8"}
    close(drawn)


def test_write_plots_draws_per_device_only_what_it_has(tmp_path: Path) -> None:
    latencies = {("board", "tflite-int8"): np.array([0.4, 0.5, 0.6])}
    plots = write_plots(summary(), latencies, tmp_path)
    assert [(plot.path.relative_to(tmp_path).as_posix(), plot.device) for plot in plots] == [
        ("devices/board/pareto.png", "board"), ("devices/board/latency.png", "board"),
        ("p90_heatmap.png", None), ("accuracy_vs_size.png", None)]
    for plot in plots:
        assert plot.path.read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "devices" / "mcu").exists(), "an MCU without latency: no plot"


def test_a_detectors_plots_name_its_score_map50() -> None:
    detection = summary().model_copy(update={"task": "detection"})
    drawn = draw_pareto(detection, "board")
    assert drawn.axes.get_ylabel() == "test mAP@0.5"
    assert drawn.axes.get_title().startswith("board: mAP@0.5 against p90 latency")
    legend = [text.get_text() for text in drawn.axes.get_legend().get_texts()]
    assert "Pareto frontier (mAP@0.5, p90, size)" in legend
    assert any(text.startswith("mAP@0.5 floor ") for text in legend)
    close(drawn)
    sized = draw_accuracy_size(detection)
    assert sized.axes.get_ylabel() == "test mAP@0.5"
    assert sized.axes.get_title() == "mAP@0.5 against size, every variant and device"
    close(sized)
    plain = draw_pareto(summary(), "board")
    assert plain.axes.get_ylabel() == "test accuracy"
    close(plain)


def energy_row(variant: str, mj: float, accuracy: float, source: str = "estimated",
               status: str = "pass") -> SummaryRow:
    return summary_row(variant, "pi", status, runtime="tflite", accuracy=accuracy,
                       energy_mj=mj, energy_source=source, size_bytes=1000)


def test_the_energy_frontier_is_every_passing_variant_none_beats_on_both() -> None:
    from tasks.select.plots import energy_front

    rows = [energy_row("frugal", 1.0, 0.90), energy_row("accurate", 4.0, 0.97),
            energy_row("dominated", 5.0, 0.95), energy_row("failing", 0.5, 0.99, status="fail"),
            energy_row("balanced", 2.0, 0.95)]
    assert energy_front(rows) == ["frugal", "accurate", "balanced"]


def test_the_energy_plot_says_when_its_energies_are_estimated(tmp_path: Path) -> None:
    from tasks.select.plots import draw_energy, write_plots

    rows = [energy_row("frugal", 1.0, 0.90), energy_row("accurate", 4.0, 0.97)]
    summary = summary_of(rows, {"pi": "frugal"})
    drawn = draw_energy(summary, "pi")
    assert drawn.axes.get_title() == ("pi: accuracy against energy per inference "
                                      "(ESTIMATED, not measured)")
    assert set(drawn.labels) == {"frugal", "accurate"}
    measured = summary_of([energy_row("frugal", 1.0, 0.9, "measured")], {"pi": "frugal"})
    assert draw_energy(measured, "pi").axes.get_title().endswith("(measured)")
    titles = [plot.title for plot in write_plots(summary, {}, tmp_path)]
    assert "pi: accuracy against energy per inference (estimated)" in titles
    assert (tmp_path / "devices" / "pi" / "energy.png").is_file()
