"""The console of ``edgeflow run`` and ``edgeflow step``: progress and results on the
console, the libraries' chatter in the run's log (``.edgeflow/logs/``), an error once.

The CLI tests run the real command in a subprocess (not a terminal: progress is one
line per item) on one tiny project with a pruning recipe and int8 variants, so that
every kind of chatter the issue lists is produced: Prefect's INFO lines, absl/oneDNN
banners and XNNPACK's line (C++ on descriptor 2), the TFLite converter's
``fully_quantize`` line, NNCF's progress bars, MLflow's store creation. They run in
order: the run, then steps on its outputs, then a failing run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.tiny import TINY_PARAMS, write_tiny_config

EDGEFLOW = Path(sys.executable).parent / "edgeflow"

CONSOLE_PARAMS = TINY_PARAMS.replace(
    "optimize: {pruning: []}",
    "optimize: {pruning: [{name: p50, method: magnitude, sparsity: 0.5, epochs: 1}]}",
).replace("formats: {tflite: [fp32], onnx: [fp32], openvino: [fp32]}",
          "formats: {tflite: [fp32, int8], onnx: [fp32], openvino: [int8]}")

# Two devices benchmarked in parallel: this machine and a microcontroller profile.
CONSOLE_FARM = """\
devices:
  local: {threads: 1}
  esp: {transport: mcu, flash_kb: 4096, ram_kb: 512}
"""

# What third-party code prints, by who prints it: none of it may reach the console.
CHATTER = {
    "Prefect's log lines": "| INFO    |",
    "absl's pre-init warning (C++)": "absl::InitializeLog",
    "oneDNN's banner (C++)": "oneDNN custom operations",
    "XNNPACK's delegate line (C++)": "Created TensorFlow Lite XNNPACK delegate",
    "the TFLite converter (C++)": "fully_quantize: 0, inference_type: 6",
    "NNCF's progress bars": "Statistics collection",
    "MLflow's store creation": "mlflow.store.db.utils",
}
# What converting prints, in a process of its own (`edgeflow step convert`).
CONVERT_CHATTER = ("XNNPACK's delegate line (C++)", "the TFLite converter (C++)",
                   "NNCF's progress bars")


def edgeflow(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{EDGEFLOW.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PREFECT_API_URL", None)  # the run's own temporary server, stopped at its exit
    # As a user's shell runs it: Python buffers what it prints into a pipe, and that
    # must still land where descriptor 1 pointed when it was printed.
    env.pop("PYTHONUNBUFFERED", None)
    return subprocess.run([str(EDGEFLOW), *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def logs(project: Path) -> list[Path]:
    return sorted((project / ".edgeflow" / "logs").glob("*.log"))


def newest_log(project: Path, command: str) -> str:
    found = [path for path in logs(project) if path.name.endswith(f"-{command}.log")]
    assert found, f"no log of {command} in {logs(project)}"
    return found[-1].read_text(encoding="utf-8", errors="replace")


def chatter_in(text: str, names: tuple[str, ...] | None = None) -> list[str]:
    return [name for name in names or tuple(CHATTER) if CHATTER[name] in text]


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def expected_convert_lines(project: Path) -> list[str]:
    variants = read(project / "models/variants/index.json")["variants"]
    return [f"convert: 0/{len(variants)}"] + [
        f"convert: {done}/{len(variants)} {variant['name']} ({variant['status']})"
        for done, variant in enumerate(variants, 1)]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("console") / "experiment"
    write_tiny_config(root, CONSOLE_PARAMS, CONSOLE_FARM)
    return root


def test_a_run_shows_progress_and_results_and_logs_the_chatter(project: Path) -> None:
    result = edgeflow("run", cwd=project)
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert chatter_in(console) == [], console[:3000]
    assert result.stderr == ""

    variants = read(project / "models/variants/index.json")["variants"]
    assert len(variants) == 8, "2 sources x 4 (format, precision)"
    history = read(project / "metrics/train_history.json")
    # Progress comes before the results table, and is the only thing before it.
    # (The title's line may start with the spaces that centre it: not progress.)
    progress = [line for line in result.stdout.split("edgeflow results")[0].splitlines()
                if line.strip()]
    accuracy = read(project / "models/pruned/index.json")["sources"][0]["accuracy"]
    steps = [line for line in progress if not line.startswith(("benchmark[", "release["))]
    assert steps == (
        ["train: 0/6"]
        + [f"train: {epoch['epoch']}/6 (loss {epoch['loss']:.3f} acc {epoch['accuracy']:.3f} "
           f"val_acc {epoch['val_accuracy']:.3f})" for epoch in history]
        + ["optimize: 0/1", f"optimize: 1/1 p50 (magnitude, test accuracy "
                            f"{accuracy['before']:.3f} -> {accuracy['after']:.3f})"]
        + expected_convert_lines(project))
    for device in ("local", "esp"):  # in parallel: each device's lines in its own order
        statuses = [read(project / "results" / device / f"{variant['name']}.json")["status"]
                    for variant in variants]
        assert [line for line in progress if line.startswith(f"benchmark[{device}]")] == (
            [f"benchmark[{device}]: 0/{len(variants)}"]
            + [f"benchmark[{device}]: {done}/{len(variants)} {variant['name']} ({status})"
               for done, (variant, status) in enumerate(zip(variants, statuses), 1)])
    # The board's release after the results are in (the microcontroller's bundle is
    # written at once: no progress).
    chosen = read(project / "reports/summary.json")["recommendations"]["local"]
    releases = ["release[local]: 0/2", f"release[local]: 1/2 {chosen} (built)",
                f"release[local]: 2/2 {chosen} (released)"]
    assert [line for line in progress if line.startswith("release[")] == releases
    assert len(progress) == len(steps) + 2 * (len(variants) + 1) + len(releases), "nothing else"
    assert progress.index("benchmark[local]: 0/8") > progress.index(steps[-1])
    assert progress.index(releases[0]) > max(
        index for index, line in enumerate(progress) if line.startswith("benchmark["))
    assert "flow state: " in result.stdout

    log_line = next(line for line in result.stdout.splitlines() if line.startswith("log: "))
    log = Path(log_line.removeprefix("log: "))
    assert log.parent == project / ".edgeflow" / "logs" and log.name.endswith("-run.log")
    text = log.read_text(encoding="utf-8", errors="replace")
    assert chatter_in(text) == list(CHATTER), "every kind of chatter was produced, into the log"
    assert all(f"edgeflow: {line}" in text for line in progress), "the log is the whole story"


def test_a_step_shows_its_progress_alone_and_logs_the_chatter(project: Path) -> None:
    result = edgeflow("step", "convert", cwd=project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[:-1] == expected_convert_lines(project)
    assert lines[-1].startswith("step convert: done")
    assert chatter_in(newest_log(project, "step-convert"), CONVERT_CHATTER) == list(
        CONVERT_CHATTER)


def test_verbose_brings_the_chatter_back_to_the_console(project: Path) -> None:
    before = logs(project)
    result = edgeflow("step", "convert", "--verbose", cwd=project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert chatter_in(console, CONVERT_CHATTER) == list(CONVERT_CHATTER)
    assert [line for line in console.splitlines() if line.startswith("convert: ")] == (
        expected_convert_lines(project))
    assert len(logs(project)) == len(before) + 1, "a verbose run has its log too"


def test_a_failed_run_prints_its_error_once_with_the_log(project: Path) -> None:
    # prepare fails inside the Prefect flow: Prefect reports it four times, in the log.
    broken = project / "broken.yaml"
    broken.write_text(CONSOLE_PARAMS.replace(
        "data: {", "data: {source: folder, folder: no-such-images, "), encoding="utf-8")
    result = edgeflow("run", "--params", str(broken), cwd=project)
    assert result.returncode == 1
    message = (f"data.folder: {project / 'no-such-images'} is not a folder of class "
               "subfolders")
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"edgeflow: error: {message} (log: {project}/.edgeflow/logs/")
    log = Path(line.removesuffix(")").split(" (log: ")[1]).read_text(encoding="utf-8")
    assert result.stdout == ""
    assert (result.stdout + result.stderr).count(message) == 1
    assert log.count(message) >= 5, "Prefect's reports of it and ours are in the log"
    assert "ERROR   | Task run 'prepare" in log and f"edgeflow: error: {message}" in log
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- in process


CAPTURED_SCRIPT = """
import ctypes, os, subprocess, sys, threading
from pathlib import Path
from flows.console import captured
from tasks.core import notices

print("before", flush=True)
with captured(Path(sys.argv[1])):
    os.write(1, b"C-level stdout\\n")
    os.write(2, b"C-level stderr\\n")
    worker = threading.Thread(target=lambda: (os.write(2, b"from a worker thread\\n"),
                                              notices.progress("convert", 1, 2, "a", "ok")))
    worker.start()
    worker.join()
    subprocess.run(["sh", "-c", "echo from a child >&2"], check=True)
    notices.warn("a split is small")
    ctypes.CDLL(None).printf(b"C printf, still in libc's buffer at the end of the block\\n")
    print("python print, still in its buffer at the end of the block")
print("after")
"""


def test_captured_sends_descriptors_threads_and_children_to_the_log(tmp_path: Path) -> None:
    # A process of its own: its descriptors 1 and 2 are pipes, as under CI, and Python
    # buffers what it prints until the block ends.
    log = tmp_path / "run.log"
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    result = subprocess.run([sys.executable, "-c", CAPTURED_SCRIPT, str(log)],
                            cwd=Path(__file__).resolve().parents[2], env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    assert (result.stdout, result.stderr) == ("before\nconvert: 1/2 a (ok)\nafter\n",
                                              "edgeflow: warning: a split is small\n")
    text = log.read_text()
    for line in ("C-level stdout", "C-level stderr", "from a worker thread", "from a child",
                 "edgeflow: convert: 1/2 a (ok)", "edgeflow: warning: a split is small",
                 "python print, still in its buffer", "C printf, still in libc's buffer"):
        assert line in text, line
    assert "before" not in text and "after" not in text


def test_captured_gives_the_terminal_back_when_the_block_fails(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from flows.console import captured

    with pytest.raises(ZeroDivisionError), captured(tmp_path / "run.log"):
        os.write(2, b"inside\n")
        1 / 0
    os.write(2, b"outside\n")
    assert capfd.readouterr().err == "outside\n"
    assert "inside" in (tmp_path / "run.log").read_text()


def test_an_unexpected_error_is_one_line_naming_the_log_which_has_the_traceback(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import typer

    from flows.cli.exits import logged

    def bug() -> None:
        raise KeyError("reference_accuracy")

    log = tmp_path / "run.log"
    with pytest.raises(typer.Exit) as exit_info:
        logged(log, False, bug)
    assert exit_info.value.exit_code == 1
    assert capfd.readouterr().err == (
        f"edgeflow: error: KeyError: 'reference_accuracy' (unexpected: the traceback is in "
        f"{log})\n")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and 'raise KeyError("reference_accuracy")' in text


def test_without_a_listener_a_warning_is_a_line_on_stderr_and_progress_is_silent(
        capfd: pytest.CaptureFixture[str]) -> None:
    from tasks.core import notices

    notices.progress("convert", 1, 2, "a")
    assert notices.warn("few images") == "few images"
    assert capfd.readouterr() == ("", "edgeflow: warning: few images\n")


def test_a_counter_counts_from_zero_and_a_step_with_nothing_to_do_says_so() -> None:
    from tasks.core import notices

    seen: list[str] = []
    with notices.listening(lambda notice: seen.append(notice.line())):
        counter = notices.Counter("benchmark[pi]", 2)
        counter.advance("tflite-int8", "ok")
        counter.advance("onnx-fp32")
        notices.Counter("optimize", 0)
    notices.progress("convert", 1, 1, "after the block")
    assert seen == ["benchmark[pi]: 0/2", "benchmark[pi]: 1/2 tflite-int8 (ok)",
                    "benchmark[pi]: 2/2 onnx-fp32", "optimize: nothing to do"]


def test_listened_says_whether_anyone_renders_notices() -> None:
    from tasks.core import notices

    assert not notices.listened()
    with notices.listening(lambda notice: None):
        assert notices.listened()
    assert not notices.listened()


def test_a_new_log_is_named_by_time_and_command_and_the_oldest_beyond_the_limit_go(
        tmp_path: Path) -> None:
    from flows.console import LOGS_KEPT, new_log

    logs_dir = tmp_path / ".edgeflow" / "logs"
    logs_dir.mkdir(parents=True)
    old = [logs_dir / f"20260101T0000{second:02d}Z-1-run.log" for second in range(LOGS_KEPT + 3)]
    for path in old:
        path.write_text("old run\n")
    (logs_dir / "notes.txt").write_text("not a log: kept\n")
    path = new_log(logs_dir, "step-train")
    assert re.fullmatch(rf"20\d{{6}}T\d{{6}}Z-{os.getpid()}-step-train\.log", path.name)
    assert not path.exists(), "created by the run that writes it"
    assert sorted(logs_dir.glob("*.log")) == old[-(LOGS_KEPT - 1):], "room for the new one"
    assert (logs_dir / "notes.txt").is_file()


def test_on_a_terminal_each_step_is_a_bar_that_ends_with_its_last_item() -> None:
    import io

    from flows.console import BarRenderer, Terminal
    from tasks.core import notices

    out, err = io.StringIO(), io.StringIO()
    renderer = BarRenderer(Terminal(out, err, is_tty=True))
    for notice in (notices.Progress("train", 0, 4), notices.Progress("train", 1, 4, "", "loss 2"),
                   notices.Progress("train", 2, 4, "", "stopped early", stopped=True),
                   notices.Progress("benchmark[pi]", 0, 2),
                   notices.WarningNotice("a split is small"),
                   notices.Progress("benchmark[pi]", 2, 2, "tflite-int8", "ok")):
        renderer(notice)
    renderer.close()
    final = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).split("\r")[-1]
    bars = [line.split() for line in final.splitlines()[-2:]]
    assert [bar[:1] + bar[2:-1] for bar in bars] == [
        ["train", "2/4", "(stopped", "early)"], ["benchmark[pi]", "2/2", "tflite-int8", "(ok)"]]
    assert "edgeflow: warning: a split is small" in out.getvalue()
    assert err.getvalue() == ""


def bars_at_80_columns(renderer: Any) -> list[tuple[str, int, str]]:
    """Each bar row of ``renderer`` as rich draws it 80 columns wide: its text (the
    elapsed time as H:MM:SS), how many of its bar's characters are filled, and the fill's
    style (complete or finished)."""
    import io

    from rich.console import Console

    console = Console(width=80, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor")
    rows = []
    for line in console.render_lines(renderer.progress.get_renderable(), console.options,
                                     pad=False):
        text = "".join(segment.text for segment in line)
        filled = [segment for segment in line if segment.text.strip("\u2501\u2578\u257a") == ""
                  and segment.text.strip() and str(segment.style) != "grey23"]
        rows.append((re.sub(r"\d:\d\d:\d\d$", "H:MM:SS", text),
                     sum(len(segment.text) for segment in filled),
                     ",".join(sorted({str(segment.style) for segment in filled}))))
    return rows


def test_on_a_terminal_each_bar_is_filled_by_its_items_done_of_its_total() -> None:
    """At 80 columns: the step, a bar of 35 characters filled in proportion (none at 0,
    11.5 at 1/3, 33 at 19/20, all 35 in the finished colour at the total), done/total, the
    item with its detail in brackets, the time; one row per step however many notices."""
    import io

    from flows.console import BarRenderer, Terminal
    from tasks.core import notices

    renderer = BarRenderer(Terminal(io.StringIO(), io.StringIO(), is_tty=True))
    try:
        for notice in (notices.Progress("train", 0, 4),
                       notices.Progress("benchmark[pi]", 0, 2),
                       notices.Progress("benchmark[pi]", 1, 3, "tflite-int8", "ok"),
                       notices.Progress("optimize", 19, 20, "", "pruned"),
                       notices.Progress("convert", 8, 8, "onnx-fp32")):
            renderer(notice)
        bar, half, back = "\u2501", "\u2578", "\u257a"
        complete, finished = "rgb(249,38,114)", "rgb(114,156,31)"
        assert bars_at_80_columns(renderer) == [
            ("train         " + bar * 35 + " 0/4                    H:MM:SS", 0, ""),
            ("benchmark[pi] " + bar * 11 + half + bar * 23 + " 1/3   tflite-int8 (ok) H:MM:SS",
             12, complete),  # 23 half characters of 70
            ("optimize      " + bar * 33 + back + bar + " 19/20 (pruned)         H:MM:SS",
             33, complete),  # 66 of 70
            ("convert       " + bar * 35 + " 8/8   onnx-fp32        H:MM:SS", 35, finished)]
        assert [(task.fields["step"], task.completed, task.total, task.stop_time)
                for task in renderer.progress.tasks] == [
            ("train", 0, 4, None), ("benchmark[pi]", 1, 3, None),
            ("optimize", 19, 20, None), ("convert", 8, 8, None)]
        # A step whose total grows, and one that stops early: its clock stops alone.
        renderer(notices.Progress("train", 3, 6, "", "loss 2"))
        renderer(notices.Progress("optimize", 19, 20, "", "stopped early", stopped=True))
        train, _, optimize, convert = renderer.progress.tasks
        assert (train.completed, train.total, train.description) == (3, 6, "(loss 2)")
        assert optimize.stop_time is not None and optimize.description == "(stopped early)"
        assert train.stop_time is None and convert.stop_time is None
        assert bars_at_80_columns(renderer)[0][1:] == (18, complete)
    finally:
        renderer.close()


def test_on_a_terminal_a_warning_is_printed_above_the_bars_as_written() -> None:
    import io

    from flows.console import BarRenderer, Terminal
    from tasks.core import notices

    out = io.StringIO()
    renderer = BarRenderer(Terminal(out, io.StringIO(), is_tty=True))
    renderer(notices.WarningNotice("[bold]pi5[/bold] is 'slow': 12.5 ms"))
    renderer.close()
    printed = [line for line in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
               .splitlines() if line.strip()]
    assert printed == ["edgeflow: warning: [bold]pi5[/bold] is 'slow': 12.5 ms"]
    assert renderer.progress.tasks == []
    # In yellow, all of it: no highlighting of its numbers or quotes in other colours.
    assert ("\x1b[33medgeflow: warning: [bold]pi5[/bold] is 'slow': 12.5 ms\x1b[0m\n"
            in out.getvalue())


@pytest.mark.parametrize("detail", sorted(__import__("flows.console").console.ALWAYS_SHOWN))
def test_off_a_terminal_every_failing_item_of_a_large_step_is_a_line(detail: str) -> None:
    from flows.console import ALWAYS_SHOWN, shown_as_a_line
    from tasks.core.notices import Progress

    assert ALWAYS_SHOWN == {"failed", "rejected", "error"}
    assert [done for done in range(44) if shown_as_a_line(
        Progress("benchmark[pi]", done, 43, f"v{done}", detail if done == 8 else "ok"))] == [
        0, 5, 8, 10, 15, 20, 25, 30, 35, 40, 43]


def test_off_a_terminal_progress_goes_to_stdout_and_warnings_to_stderr() -> None:
    import io

    from flows.console import LineRenderer, Terminal
    from tasks.core import notices

    out, err = io.StringIO(), io.StringIO()
    renderer = LineRenderer(Terminal(out, err, is_tty=False))
    for done in range(22):
        renderer(notices.Progress("convert", done, 21, f"v{done}" * bool(done)))
    renderer(notices.WarningNotice("a split is small"))
    renderer.close()
    assert out.getvalue() == "".join(f"convert: {done}/21{f' v{done}' * bool(done)}\n"
                                     for done in (0, 3, 6, 9, 12, 15, 18, 21))
    assert err.getvalue() == "edgeflow: warning: a split is small\n"


def test_the_run_log_stamps_each_line_and_gives_an_input_error_by_its_message(
        tmp_path: Path) -> None:
    from flows.console import RunLog, one_line
    from tasks.core.errors import EdgeflowError

    log = RunLog(tmp_path / "run.log")
    log.write("two\nlines")
    log.write("")
    log.error(EdgeflowError("params.yaml: train.epochs must be more than 0"))
    try:
        raise KeyError("boom")
    except KeyError as error:
        log.error(error)
    log.close()
    lines = (tmp_path / "run.log").read_text().splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d edgeflow: ", line) for line in lines), lines
    assert [line[9:] for line in lines[:4]] == [
        "edgeflow: two", "edgeflow: lines", "edgeflow: ",
        "edgeflow: error: params.yaml: train.epochs must be more than 0"]
    assert lines[4][9:] == "edgeflow: Traceback (most recent call last):"
    assert lines[-1][9:] == "edgeflow: KeyError: 'boom'"
    assert one_line(ValueError("a\n  b " + "x" * 400)) == "ValueError: a b " + "x" * 281 + "..."
    assert one_line(OSError("c " + "y" * 284)) == "OSError: c " + "y" * 284  # 295: whole


def test_off_a_terminal_a_large_step_prints_about_every_tenth_item_and_every_failure() -> None:
    from flows.console import shown_as_a_line
    from tasks.core.notices import Progress

    def lines(total: int, failed_at: set[int]) -> list[int]:
        return [done for done in range(total + 1)
                if shown_as_a_line(Progress("benchmark[pi]", done, total, f"v{done}" * bool(done),
                                            "failed" if done in failed_at else "ok"))]

    assert lines(43, {7}) == [0, 5, 7, 10, 15, 20, 25, 30, 35, 40, 43]
    assert lines(20, set()) == list(range(21)), "every item of a step of 20"
    assert lines(21, set()) == [0, 3, 6, 9, 12, 15, 18, 21]
    stopped = Progress("train", 12, 40, "", "early stop", stopped=True)
    assert shown_as_a_line(stopped), "a step that stops early says so"


# --------------------------------------------------------------------------- results table


def results_summary() -> dict:
    """A summary as select writes it, of the widths a real farm gives: long device and
    variant names, a failed row with two reasons, a skipped one (shown with ``--all``
    only), notes on a passing one."""
    def row(device: str, variant: str, status: str, p90: float, reasons: list[str],
            notes: list[str]) -> dict:
        fmt, precision = variant.split("-")[-2:] if variant.count("-") > 1 else variant.split("-")
        return {"variant": variant, "format": fmt, "precision": precision, "source": "base",
                "device": device, "runtime": "onnxruntime", "size_bytes": 7680, "threads": 1,
                "accuracy": 0.9028, "accuracy_samples": 360, "accuracy_interval": [0.87, 0.93],
                "accuracy_drop": 0.0, "latency_ms": {"p50": p90 / 2, "p90": p90, "p99": p90 * 3,
                                                     "mean": p90 / 2},
                "throughput_fps": 1000 / p90, "peak_rss_mb": 83.0, "load_ms": 4.0,
                "runtime_version": "1.32.0", "execution_precision": "f32", "mcu": None,
                "notes": notes, "status": status, "reasons": reasons}

    busy = "conditions changed during the run: other processes kept 1.64 CPUs busy"
    rows = [row("jetson-orin-nano-lab2", "pruned50-onnx-int8-qdq", "fail", 12.3456,
                ["p90 latency 12.346 ms > max_latency_p90_ms 5", "accuracy drop 3.10% > "
                 "max_accuracy_drop 2.00% (Errno [111] quoted: not markup)"], [busy]),
            {**row("local", "edgetpu-int8", "skipped", 1.0,
                   ["runtime edgetpu is not on this device"], []),
             "accuracy": None, "accuracy_samples": 0, "accuracy_interval": None,
             "latency_ms": None, "throughput_fps": None, "peak_rss_mb": None, "load_ms": None},
            row("jetson-orin-nano-lab2", "onnx-fp32", "pass", 1.5, [], [busy]),
            row("local", "tflite-fp32", "pass", 0.005, [], [])]
    return {"reference_accuracy": 0.9028, "reference_samples": 360,
            "reference_interval": [0.87, 0.93], "rank_by": "latency_p90_ms",
            "requirements": {"jetson-orin-nano-lab2": {"max_latency_p90_ms": 5.0},
                             "local": {}},
            "counts": {"pass": 2, "fail": 1, "error": 0, "skipped": 1},
            "recommendations": {"jetson-orin-nano-lab2": "onnx-fp32", "local": "tflite-fp32"},
            "results": rows}


def in_a_terminal(argv: list[str], cwd: Path, columns: int) -> str:
    """What ``edgeflow ARGV`` shows in a real pseudo-terminal ``columns`` wide (its own
    window size, as a terminal emulator sets it), escape sequences removed."""
    import fcntl
    import pty
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {name: value for name, value in os.environ.items() if name not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    process = subprocess.Popen([str(EDGEFLOW), *argv], cwd=cwd, env=env, stdin=terminal,
                               stdout=terminal, stderr=terminal, start_new_session=True)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal's last writer closed it
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode("utf-8")).replace("\r\n", "\n")


def results_lines(text: str) -> list[str]:
    """The results' lines: from the title to the first recommendation."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "edgeflow results" in line)
    end = next(i for i, line in enumerate(lines) if line.startswith("- "))
    return lines[start:end]


COMPACT_HEADERS = ["#", "device", "variant", "status", "accuracy", "p90", "ms", "size", "KB"]


@pytest.mark.parametrize("columns", [80, 120])
def test_in_a_narrow_terminal_the_results_are_a_compact_table_with_the_reasons_under_it(
        tmp_path: Path, columns: int) -> None:
    write_tiny_config(tmp_path)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "summary.json").write_text(json.dumps(results_summary()))
    lines = results_lines(in_a_terminal(["report"], tmp_path, columns))
    assert max(len(line) for line in lines) <= columns, "\n".join(lines)
    assert lines[0].split() == (
        "edgeflow results (fp32 reference accuracy 0.90 [0.87, 0.93] on 360 test images)".split())
    header = next(line.split() for line in lines if line.split()[:2] == ["#", "device"])
    assert header == COMPACT_HEADERS, "every header whole, on one line"
    rows = [line.split() for line in lines if re.match(r"\s*\d+ ", line)]
    assert [row[:1] + row[-4:] for row in rows] == [["1", "fail", "0.903", "12.346", "7.5"],
                                                   ["2", "pass", "0.903", "1.500", "7.5"],
                                                   ["3", "pass", "0.903", "0.005", "7.5"]]
    if columns >= 100:  # 80 columns fold the longest names inside their cells
        assert [row[1:3] for row in rows] == [
            ["jetson-orin-nano-lab2", "pruned50-onnx-int8-qdq"],
            ["jetson-orin-nano-lab2", "onnx-fp32"], ["local", "tflite-fp32"]]
    # The reasons and notes as a list under the table, each entry wrapped beside its number.
    listed = " ".join(" ".join(lines[lines.index(next(line for line in lines
                                                       if line.startswith("[1]"))):]).split())
    assert listed == (
        "[1] jetson-orin-nano-lab2 pruned50-onnx-int8-qdq: p90 latency 12.346 ms > "
        "max_latency_p90_ms 5; accuracy drop 3.10% > max_accuracy_drop 2.00% (Errno [111] "
        "quoted: not markup); conditions changed during the run: other processes kept 1.64 "
        "CPUs busy [2] jetson-orin-nano-lab2 onnx-fp32: conditions changed during the run: "
        "other processes kept 1.64 CPUs busy")
    # With --all the skipped row is shown in its place, numbered with the others.
    everything = results_lines(in_a_terminal(["report", "--all"], tmp_path, columns))
    assert [row[:1] + row[-4:] for row in (line.split() for line in everything
                                          if re.match(r"\s*\d+ ", line))] == [
        ["1", "fail", "0.903", "12.346", "7.5"], ["2", "skipped", "\u2014", "\u2014", "7.5"],
        ["3", "pass", "0.903", "1.500", "7.5"], ["4", "pass", "0.903", "0.005", "7.5"]]
    listed = " ".join(" ".join(everything[everything.index(next(
        line for line in everything if line.startswith("[1]"))):]).split())
    assert "[2] local edgetpu-int8: runtime edgetpu is not on this device [3] " \
        "jetson-orin-nano-lab2 onnx-fp32: conditions" in listed


def test_a_wide_terminal_keeps_the_full_table_and_a_pipe_gets_columns_or_80(
        tmp_path: Path) -> None:
    from tasks.select.report.cells import COLUMNS

    write_tiny_config(tmp_path)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "summary.json").write_text(json.dumps(results_summary()))
    wide = results_lines(in_a_terminal(["report"], tmp_path, 200))
    assert max(len(line) for line in wide) <= 200
    header = " ".join(" ".join(wide[1:5]).replace("┃", " ").split())
    # No row has an energy: its column is left out, every other one kept.
    assert "energy" not in header and "reasons / notes" in header
    assert all(column in header for column in COLUMNS if column != "energy mJ")

    env = {name: value for name, value in os.environ.items() if name != "COLUMNS"}
    for columns, width in ((None, 80), ("100", 100)):
        result = subprocess.run([str(EDGEFLOW), "report"], cwd=tmp_path, capture_output=True,
                                text=True, timeout=60, check=True,
                                env={**env, **({"COLUMNS": columns} if columns else {})})
        lines = results_lines(result.stdout)
        assert max(len(line) for line in lines) <= width
        assert next(line.split() for line in lines
                    if line.split()[:2] == ["#", "device"]) == COMPACT_HEADERS


def test_at_80_columns_the_names_a_seed_farm_gives_stay_whole() -> None:
    """The longest names the shipped farm and formats give (a 10-character device, a
    26-character variant) fit on their row at 80 columns: two spaces between columns."""
    from rich.console import Console

    from tasks.core.contracts.summary import Summary
    from tasks.select.report.terminal import compact_summary

    summary = results_summary()
    summary["results"] = [{**summary["results"][2], "device": "nano33-ble",
                           "variant": "pruned50-openvino-int8-acc"}]
    console = Console(width=80, force_terminal=False, record=True)
    for part in compact_summary(Summary.model_validate(summary)):
        console.print(part)
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    row = next(line.split() for line in lines if re.match(r"\s*1 ", line))
    assert row == ["1", "nano33-ble", "pruned50-openvino-int8-acc", "pass", "0.903", "1.500",
                   "7.5"]
