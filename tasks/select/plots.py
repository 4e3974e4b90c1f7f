"""The report's plots (PNG files), pure functions of a summary and the raw latencies:

- per device, the Pareto plot: accuracy against p90 latency on a log axis, one colour per
  runtime, the frontier joined, failing variants hollow, the recommendation starred, the
  requirements drawn as limits, labels only where they collide with nothing;
- per device, the latency distribution of each variant (violins of the raw latencies on a
  log axis, p50 and p90 marked);
- accuracy against size, every (variant, device);
- a device x variant heat map of p90 with each result's status written in its cell;
- per device with an energy figure, accuracy against energy per inference (log axis),
  its energy/accuracy frontier joined, estimated energies hollow and the title saying
  so (:func:`draw_energy`).

:data:`PLOTS` names them (a registry: the HTML and Markdown reports, MLflow and DVC read
the same list). Every plot is a :class:`Plot`: where it was written, a title, the device
it is about (None: all of them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.contracts.summary import RowStatus, Summary, SummaryRow
from tasks.select.report.cells import EMULATED_MARK, metric_label

# One colour per runtime, fixed so that a runtime keeps its colour from report to report
# (tab10's); an unknown runtime takes the next free one in order.
RUNTIME_COLOURS = {"tflite": "#1f77b4", "onnxruntime": "#ff7f0e", "openvino": "#2ca02c",
                   "tflite-micro": "#d62728", "edgetpu": "#9467bd", "tensorrt": "#8c564b"}
SPARE_COLOURS = ("#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

# The distribution plot draws each violin from at most this many evenly spaced quantiles
# of the raw latencies: the shape of 100,000 runs, at the cost of a few thousand.
VIOLIN_QUANTILES = 2000

# Where a label may sit around its point, in points (x, y, horizontal alignment): above
# right first, then straight above, below, and the left side last (a label on the left of
# its point reads as the next point's).
LABEL_OFFSETS = ((5, 4, "left"), (0, 9, "center"), (5, -11, "left"), (0, -16, "center"),
                 (-5, 4, "right"), (-5, -11, "right"), (9, -3, "left"), (-9, -3, "right"))
MARKER_RADIUS_PX = 6.0


@dataclass(frozen=True)
class Plot:
    """One written plot: its file, its title, and its device (None: every device)."""

    path: Path
    title: str
    device: str | None = None


@dataclass
class Drawn:
    """A drawn, unsaved figure: its axes, and the labels placed on it by name."""

    figure: Any
    axes: Any
    labels: dict[str, Any]

    def save(self, target: Path) -> None:
        """Write it as a PNG (the folders made) and free it."""
        import matplotlib.pyplot as plt

        target.parent.mkdir(parents=True, exist_ok=True)
        self.figure.savefig(target, dpi=110)
        plt.close(self.figure)


def runtime_colour(runtime: str, runtimes: Iterable[str]) -> str:
    """``runtime``'s colour: its fixed one, else a spare one by its place among the
    unknown ``runtimes`` (sorted)."""
    if runtime in RUNTIME_COLOURS:
        return RUNTIME_COLOURS[runtime]
    unknown = sorted({name for name in runtimes if name not in RUNTIME_COLOURS})
    return SPARE_COLOURS[unknown.index(runtime) % len(SPARE_COLOURS)]


def _overlaps(box: Any, boxes: list[Any]) -> bool:
    return any(box.overlaps(other) for other in boxes)


def place_labels(axes: Any, points: list[tuple[float, float, str]],
                 texts: dict[str, str] | None = None) -> dict[str, Any]:
    """Label each of ``points`` (x, y, name; in priority order) with ``texts[name]`` (the
    name itself by default) at the first of :data:`LABEL_OFFSETS` where it overlaps no
    label already placed, no other point's marker, and stays inside the axes; a label
    that fits nowhere is left out. Returns the placed labels (matplotlib texts) by name."""
    from matplotlib.transforms import Bbox

    figure = axes.figure
    renderer = figure.canvas.get_renderer()
    inside = axes.get_window_extent(renderer)
    centres = [axes.transData.transform((x, y)) for x, y, _ in points]
    markers = [Bbox.from_extents(cx - MARKER_RADIUS_PX, cy - MARKER_RADIUS_PX,
                                 cx + MARKER_RADIUS_PX, cy + MARKER_RADIUS_PX)
               for cx, cy in centres]
    placed: dict[str, Any] = {}
    taken: list[Any] = []
    for index, (x, y, name) in enumerate(points):
        others = markers[:index] + markers[index + 1:]
        for dx, dy, align in LABEL_OFFSETS:
            label = axes.annotate((texts or {}).get(name, name), (x, y), xytext=(dx, dy),
                                  textcoords="offset points",
                                  ha=align, fontsize=7)
            box = label.get_window_extent(renderer)
            fits = (inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0
                    and box.y1 <= inside.y1)
            if fits and not _overlaps(box, taken) and not _overlaps(box, others):
                taken.append(box)
                placed[name] = label
                break
            label.remove()
    return placed


def _figure(width: float, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _timed(rows: list[SummaryRow]) -> list[SummaryRow]:
    return [row for row in rows if row.latency_ms and row.accuracy is not None]


def _p90(row: SummaryRow) -> float:
    """A timed row's p90 (ms)."""
    assert row.latency_ms is not None
    return row.latency_ms.p90


def _accuracy(row: SummaryRow) -> float:
    """A row's accuracy, where it has one (:func:`_timed`, :func:`draw_accuracy_size`)."""
    assert row.accuracy is not None
    return row.accuracy


def _limit(summary: Summary, device: str, key: str) -> float | None:
    """One numeric requirement of ``device`` (None: unset)."""
    value = summary.requirements.get(device, {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def _accuracy_floor(summary: Summary, device: str) -> float | None:
    """The lowest accuracy the device's requirements accept (floor or allowed drop)."""
    floors = [_limit(summary, device, "min_accuracy")]
    drop = _limit(summary, device, "max_accuracy_drop")
    if drop is not None:
        floors.append(summary.reference_accuracy * (1 - drop))
    present = [floor for floor in floors if floor is not None]
    return max(present) if present else None


def _kb(row: SummaryRow) -> str:
    return f"{row.size_bytes / 1024:.0f} KB" if row.size_bytes else "size unknown"


def _plain_log_ticks(axis: Any) -> None:
    """Plain numbers at 1, 2 and 5 of each decade (0.2, 0.5, 1) on a log axis, instead of
    4x10^-1 or a label on every minor tick."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    axis.set_minor_formatter(NullFormatter())


def _decade_ticks(axis: Any) -> None:
    """Plain numbers on an axis whose values are log10 of milliseconds (violins and the
    heat map's colour bar are drawn in log space): 10 ** value."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{10 ** value:.3g}"))


def _log_limits(values: list[float], margin: float = 1.6) -> tuple[float, float]:
    low, high = min(values), max(values)
    return low / margin, high * margin


def draw_pareto(summary: Summary, device: str) -> Drawn:
    """The device's Pareto plot (see the module's doc)."""
    rows = [row for row in summary.results if row.device == device]
    timed = _timed(rows)
    runtimes = [row.runtime for row in summary.results]
    front = set((summary.pareto or {}).get(device) or [])
    chosen = summary.recommendations.get(device)
    figure, axes = _figure(9.5, 4.8)
    axes.set_xscale("log")
    for row in timed:
        colour = runtime_colour(row.runtime, runtimes)
        p90, accuracy = _p90(row), _accuracy(row)
        low, high = (row.latency_ci95_ms or {}).get("p90") or (p90, p90)
        a_low, a_high = row.accuracy_interval or (accuracy, accuracy)
        axes.errorbar([p90], [accuracy], xerr=[[p90 - low], [high - p90]],
                      yerr=[[accuracy - a_low], [a_high - accuracy]], fmt="none",
                      ecolor=colour, elinewidth=0.6, alpha=0.5)
        passed, on_front = row.status is RowStatus.PASS, row.variant in front
        axes.scatter([p90], [accuracy], s=70 if on_front else 36, marker="o",
                     facecolors=colour if passed else "none",
                     edgecolors="black" if on_front else colour, linewidths=1.2, zorder=3)
    best = next((row for row in timed if row.variant == chosen), None)
    if best is not None:
        axes.scatter([_p90(best)], [_accuracy(best)], s=260, marker="*",
                     facecolors="gold", edgecolors="black", linewidths=1.0, zorder=4,
                     label=f"recommended: {chosen}")
    limit = _limit(summary, device, "max_latency_p90_ms")
    if limit is not None:
        axes.axvline(limit, color="red", linestyle=":", linewidth=1.0,
                     label=f"max p90 {limit} ms")
    floor = _accuracy_floor(summary, device)
    if floor is not None:
        axes.axhline(floor, color="red", linestyle="--", linewidth=0.8,
                     label=f"{metric_label(summary)} floor {floor:.4f}")
    if timed:
        axes.set_xlim(*_log_limits([_p90(row) for row in timed]))
    for runtime in dict.fromkeys(row.runtime for row in timed):
        axes.scatter([], [], color=runtime_colour(runtime, runtimes), label=runtime)
    axes.scatter([], [], s=70, facecolors="white", edgecolors="black", linewidths=1.2,
                 label=f"Pareto frontier ({metric_label(summary)}, p90, size)")
    axes.scatter([], [], facecolors="none", edgecolors="grey", label="fails a requirement")
    untimed = len(rows) - len(timed)
    axes.set_title(f"{device}: {metric_label(summary)} against p90 latency"
                   + (f" ({untimed} without a latency, not shown)" if untimed else ""),
                   fontsize=10)
    _plain_log_ticks(axes.xaxis)
    axes.set_xlabel("p90 latency (ms, batch 1, log scale; bars: 95% intervals)")
    axes.set_ylabel(f"test {metric_label(summary)}")
    # Beside the axes, not over them: the fastest variants sit where "best" puts it.
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    figure.tight_layout()
    # Labels last, once the axes are laid out: the recommendation, the frontier, the
    # other passing variants, then the rest.
    priority = sorted(timed, key=lambda row: (row.variant != chosen, row.variant not in front,
                                              row.status is not RowStatus.PASS))
    placed = place_labels(axes, [(_p90(row), _accuracy(row), row.variant) for row in priority],
                          {row.variant: f"{row.variant} ({_kb(row)})" for row in timed})
    return Drawn(figure, axes, placed)


def _quantiles(latencies_ms: np.ndarray) -> np.ndarray:
    if latencies_ms.size <= VIOLIN_QUANTILES:
        return latencies_ms
    return np.quantile(latencies_ms, np.linspace(0, 1, VIOLIN_QUANTILES))


def draw_latency(summary: Summary, device: str,
                 latencies: dict[tuple[str, str], np.ndarray]) -> Drawn:
    """Violins of each variant's raw latencies on ``device`` (log axis, fastest p50 on
    top; white dot p50, black bar p90; the y tick labels name the variants)."""
    rows = [row for row in summary.results if row.device == device
            and (device, row.variant) in latencies and latencies[(device, row.variant)].size]
    rows.sort(key=lambda row: float(np.median(latencies[(device, row.variant)])))
    runtimes = [row.runtime for row in summary.results]
    figure, axes = _figure(7.5, 0.42 * max(len(rows), 3) + 1.4)
    if rows:
        logged = [np.log10(_quantiles(latencies[(device, row.variant)])) for row in rows]
        positions = list(range(len(rows), 0, -1))
        parts = axes.violinplot(logged, positions=positions, vert=False, widths=0.85,
                                showextrema=False)
        for body, row in zip(parts["bodies"], rows):
            body.set_facecolor(runtime_colour(row.runtime, runtimes))
            body.set_alpha(0.65)
        for position, values in zip(positions, logged):
            p50, p90 = np.quantile(values, [0.5, 0.9])
            axes.scatter([p50], [position], s=14, color="white", edgecolors="black", zorder=3)
            axes.plot([p90, p90], [position - 0.3, position + 0.3], color="black", linewidth=1.2)
        axes.set_yticks(positions, [row.variant for row in rows], fontsize=7)
        axes.set_ylim(0.4, len(rows) + 0.6)
        _decade_ticks(axes.xaxis)
    axes.set_xlabel("latency per inference (ms, log scale; dot p50, bar p90)")
    axes.set_title(f"{device}: latency distribution per variant (raw runs)", fontsize=10)
    figure.tight_layout()
    return Drawn(figure, axes, {})


def draw_accuracy_size(summary: Summary) -> Drawn:
    """Accuracy against artifact size (log axis), one point per (variant, device) that
    measured an accuracy, one label per variant where it fits."""
    points = [(row, row.size_bytes / 1024, row.accuracy) for row in summary.results
              if row.accuracy is not None and row.size_bytes]
    runtimes = [row.runtime for row in summary.results]
    figure, axes = _figure(7.5, 4.5)
    axes.set_xscale("log")
    for row, kb, accuracy in points:
        axes.scatter([kb], [accuracy], s=36, color=runtime_colour(row.runtime, runtimes))
    for runtime in dict.fromkeys(row.runtime for row, _, _ in points):
        axes.scatter([], [], color=runtime_colour(runtime, runtimes), label=runtime)
    axes.axhline(summary.reference_accuracy, linestyle="--", linewidth=0.8, color="grey",
                 label="fp32 reference")
    if points:
        axes.set_xlim(*_log_limits([kb for _, kb, _ in points]))
    _plain_log_ticks(axes.xaxis)
    axes.set_xlabel("artifact size (KB, log scale)")
    axes.set_ylabel(f"test {metric_label(summary)}")
    axes.set_title(f"{metric_label(summary)} against size, every variant and device",
                   fontsize=10)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    # One label per variant (its points on several devices sit on one vertical line).
    firsts = {row.variant: (kb, accuracy) for row, kb, accuracy in reversed(points)}
    placed = place_labels(axes, [(kb, accuracy, variant)
                                 for variant, (kb, accuracy) in reversed(firsts.items())])
    return Drawn(figure, axes, placed)


# What a heat-map cell says under its p90 for each status.
STATUS_MARKS = {RowStatus.PASS: "pass", RowStatus.FAIL: "FAIL", RowStatus.ERROR: "error",
                RowStatus.SKIPPED: "skipped"}


def heatmap_cells(summary: Summary
                  ) -> tuple[list[str], list[str], np.ndarray, list[list[str]]]:
    """The heat map's variants (rows), devices (columns), log10 p90 per cell (NaN: not
    timed) and each cell's text (p90 in ms, marked on an emulated board, and the status)."""
    variants = list(dict.fromkeys(row.variant for row in summary.results))
    devices = summary.devices
    values = np.full((len(variants), len(devices)), np.nan)
    texts = [["" for _ in devices] for _ in variants]
    for row in summary.results:
        i, j = variants.index(row.variant), devices.index(row.device)
        p90 = row.latency_ms.p90 if row.latency_ms else None
        if p90 is not None and p90 > 0:
            values[i, j] = math.log10(p90)
        # An emulated board's p90 is marked as in the tables: the emulator's, not the board's.
        mark = EMULATED_MARK if row.emulated else ""
        texts[i][j] = (f"{p90:.3g} ms{mark}\n" if p90 is not None else "") + \
            STATUS_MARKS[row.status]
    return variants, devices, values, texts


def draw_heatmap(summary: Summary) -> Drawn:
    """A variant x device grid coloured by log p90, each cell's p90 and status written."""
    variants, devices, values, texts = heatmap_cells(summary)
    figure, axes = _figure(max(4.5, 1.5 * len(devices) + 3), 0.38 * len(variants) + 1.6)
    import matplotlib

    # Cells with no p90 (skipped, failed before timing, a microcontroller) are grey.
    colours = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    image = axes.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=colours)
    for i, row_texts in enumerate(texts):
        for j, text in enumerate(row_texts):
            light = not np.isnan(values[i, j]) and values[i, j] < np.nanmean(values)
            colour = "red" if "FAIL" in text or "error" in text else ("white" if light else "black")
            axes.text(j, i, text, ha="center", va="center", fontsize=6, color=colour)
    axes.set_xticks(range(len(devices)), devices, fontsize=8)
    axes.set_yticks(range(len(variants)), variants, fontsize=7)
    if not np.all(np.isnan(values)):
        bar = figure.colorbar(image, ax=axes, shrink=min(1.0, 6 / max(len(variants), 1)) ** 0.5)
        bar.set_label("p90 latency (ms)")
        _decade_ticks(bar.ax.yaxis)
    axes.set_title("p90 latency per device and variant, with each result's status", fontsize=10)
    figure.tight_layout()
    return Drawn(figure, axes, {})


def _energetic(rows: list[SummaryRow]) -> list[SummaryRow]:
    return [row for row in rows if row.energy_mj is not None and row.energy_mj > 0
            and row.accuracy is not None]


def energy_front(rows: list[SummaryRow]) -> list[str]:
    """The passing rows no other passing row beats on both energy per inference and
    accuracy (at least as good on both, better on one), in row order."""
    passing = [row for row in _energetic(rows) if row.status is RowStatus.PASS]

    def beats(a: SummaryRow, b: SummaryRow) -> bool:
        pairs = ((a.energy_mj, b.energy_mj), (-float(a.accuracy), -float(b.accuracy)))
        return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)

    return [row.variant for row in passing if not any(beats(other, row) for other in passing)]


def draw_energy(summary: Summary, device: str) -> Drawn:
    """The device's accuracy against energy per inference: one colour per runtime, the
    95% intervals as bars, estimated energies hollow (a title that says so), the
    energy/accuracy frontier joined, the recommendation starred."""
    rows = _energetic([row for row in summary.results if row.device == device])
    runtimes = [row.runtime for row in summary.results]
    chosen = summary.recommendations.get(device)
    front = energy_front(rows)
    figure, axes = _figure(9.5, 4.8)
    axes.set_xscale("log")
    for row in rows:
        colour = runtime_colour(row.runtime, runtimes)
        mj, accuracy = float(row.energy_mj), _accuracy(row)
        low, high = row.energy_interval or (mj, mj)
        axes.errorbar([mj], [accuracy], xerr=[[mj - low], [high - mj]], fmt="none",
                      ecolor=colour, elinewidth=0.6, alpha=0.5)
        measured = row.energy_source == "measured"
        axes.scatter([mj], [accuracy], s=50, marker="o" if row.status is RowStatus.PASS else "x",
                     facecolors=colour if measured else "none", edgecolors=colour,
                     linewidths=1.2, zorder=3)
    on_front = sorted((row for row in rows if row.variant in front),
                      key=lambda row: float(row.energy_mj))
    if len(on_front) > 1:
        axes.plot([float(row.energy_mj) for row in on_front],
                  [_accuracy(row) for row in on_front], color="black", linewidth=0.8,
                  linestyle="--", label="energy/accuracy frontier")
    best = next((row for row in rows if row.variant == chosen), None)
    if best is not None:
        axes.scatter([float(best.energy_mj)], [_accuracy(best)], s=260, marker="*",
                     facecolors="gold", edgecolors="black", zorder=4,
                     label=f"recommended: {chosen}")
    limit = _limit(summary, device, "max_energy_mj")
    if limit is not None:
        axes.axvline(limit, color="red", linestyle=":", linewidth=1.0,
                     label=f"max {limit:g} mJ")
    for runtime in dict.fromkeys(row.runtime for row in rows):
        axes.scatter([], [], color=runtime_colour(runtime, runtimes), label=runtime)
    estimated = any(row.energy_source != "measured" for row in rows)
    if estimated:
        axes.scatter([], [], facecolors="none", edgecolors="grey",
                     label="estimated (farm.yaml power x latency)")
    if rows:
        axes.set_xlim(*_log_limits([float(row.energy_mj) for row in rows]))
    _plain_log_ticks(axes.xaxis)
    axes.set_xlabel("energy per inference above idle (mJ, log scale; bars: 95% intervals)")
    axes.set_ylabel(f"test {metric_label(summary)}")
    axes.set_title(f"{device}: {metric_label(summary)} against energy per inference"
                   + (" (ESTIMATED, not measured)" if estimated else " (measured)"),
                   fontsize=10)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    figure.tight_layout()
    placed = place_labels(axes, [(float(row.energy_mj), _accuracy(row), row.variant)
                                 for row in rows])
    return Drawn(figure, axes, placed)


def _energy(summary: Summary, latencies: dict[tuple[str, str], np.ndarray],
            plots_dir: Path) -> list[Plot]:
    """Each device's energy/accuracy plot, where its rows have an energy figure."""
    written = []
    for device in summary.devices:
        rows = _energetic([row for row in summary.results if row.device == device])
        if rows:
            target = plots_dir / "devices" / device / "energy.png"
            draw_energy(summary, device).save(target)
            estimated = any(row.energy_source != "measured" for row in rows)
            written.append(Plot(target, f"{device}: {metric_label(summary)} against energy "
                                        f"per inference{' (estimated)' if estimated else ''}",
                                device))
    return written


PlotWriter = Callable[[Summary, dict[tuple[str, str], np.ndarray], Path], list[Plot]]


def _per_device(summary: Summary, latencies: dict[tuple[str, str], np.ndarray],
                plots_dir: Path) -> list[Plot]:
    """Each device's Pareto plot and latency distributions, where it has something to
    draw (a microcontroller without its board has no latency; older results no raw ones)."""
    written = []
    for device in summary.devices:
        # Device names are safe folder names (farm.yaml checks them, as results/ does).
        folder = plots_dir / "devices" / device
        rows = [row for row in summary.results if row.device == device]
        if _timed(rows):
            draw_pareto(summary, device).save(folder / "pareto.png")
            written.append(Plot(folder / "pareto.png",
                                f"{device}: {metric_label(summary)} against p90 latency",
                                device))
        if any(latencies.get((device, row.variant), np.empty(0)).size for row in rows):
            draw_latency(summary, device, latencies).save(folder / "latency.png")
            written.append(Plot(folder / "latency.png", f"{device}: latency distributions",
                                device))
    return written


def _overall(summary: Summary, latencies: dict[tuple[str, str], np.ndarray],
             plots_dir: Path) -> list[Plot]:
    draw_heatmap(summary).save(plots_dir / "p90_heatmap.png")
    draw_accuracy_size(summary).save(plots_dir / "accuracy_vs_size.png")
    return [Plot(plots_dir / "p90_heatmap.png", "p90 latency per device and variant"),
            Plot(plots_dir / "accuracy_vs_size.png", f"{metric_label(summary)} against size")]


PLOTS: tuple[PlotWriter, ...] = (_per_device, _overall, _energy)


def write_plots(summary: Summary, latencies: dict[tuple[str, str], np.ndarray],
                plots_dir: Path) -> list[Plot]:
    """Every plot of :data:`PLOTS` under ``plots_dir``; ``latencies`` holds each
    (device, variant)'s raw latencies in ms (missing ones are simply not drawn)."""
    return [plot for writer in PLOTS for plot in writer(summary, latencies, plots_dir)]
