"""Text from a hostile board (terminal escapes, HTML, megabytes) is contained where it
enters: visible and capped in results, probes, the summary and `farm probe`, kept whole in
a file beside the result, and escaped in report.md. Boards are the local transport with
an interpreter that is a script (the code path an SSH board takes)."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tasks.config import BenchmarkParams, Farm, LocalDevice, RequirementParams, Requirements
from tasks.core.files import read_json
from tasks.core.contracts.summary import Summary
from tasks.select import select
from tasks.select.report.cells import COLUMNS
from tasks.select.report.markdown import markdown_text
from tasks.select.report.terminal import summary_table
from tests.tasks.select.summaries import judge as evaluate
from tasks.farm.untrusted import ERROR_LIMIT, FIELD_LIMIT, contained, contained_strings, visible
from tests.helpers import bench_device, records, scripted_python

# What issue 9's board sent: clear the screen, retitle the terminal, script the report.
ESCAPES = "\x1b[2J\x1b]0;pwned\x07"
SCRIPT = "<script>alert(1)</script>"
SHOWN = "\\x1b[2J\\x1b]0;pwned\\x07"  # the same, made visible
HUGE = 900_000
QUICK = BenchmarkParams(warmup_runs=2, warmup_seconds=0.0, runs=10, seconds=0.01,
                        max_seconds=0.05, accuracy_samples=30, timeout_seconds=60)


def rendered(table: Any) -> str:
    """What a terminal receives for a rich table (no colours: rich adds no escapes)."""
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=400, color_system=None, force_terminal=False).print(table)
    return out.getvalue()


def board_python(folder: Path, result: dict[str, Any] | None = None,
                 probe: dict[str, Any] | None = None) -> str:
    """A board's interpreter: the harness writes ``result`` as its result file (else fails
    silently); the probe answers ``probe`` (else is the real one)."""
    body = "exit 1"
    if result is not None:
        (folder / "result.json").write_text(json.dumps(result), encoding="utf-8")
        body = f'cat "{folder / "result.json"}" > "$out"'
    return scripted_python(folder, body, None if probe is None else json.dumps(probe))


# --------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("text, shown", [
    (ESCAPES, SHOWN),
    ("a\u202eb\u200bc", "a\\u202eb\\u200bc"),  # bidi override, zero-width space
    ("lone \ud800 surrogate", "lone \\ud800 surrogate"),  # a print would raise
    ("bell\a back\b del\x7f c1\x9b", "bell\\x07 back\\x08 del\\x7f c1\\x9b"),
    ("line\r\nnext\ttab\u2028", "line\\x0d next tab\\u2028"),
    ("plain ünïcode ✓ 温度", "plain ünïcode ✓ 温度"),
])
def test_visible_writes_every_hidden_character_as_its_escape(text: str, shown: str) -> None:
    assert visible(text) == shown


def test_visible_keeps_lines_for_a_file() -> None:
    assert visible("Traceback:\n\tline 1\x1b[0m\r\n", keep_lines=True) == (
        "Traceback:\n\tline 1\\x1b[0m\\x0d\n")


def test_contained_caps_and_says_how_long_the_text_was(tmp_path: Path) -> None:
    assert contained("x" * FIELD_LIMIT) == "x" * FIELD_LIMIT
    assert contained("x" * (FIELD_LIMIT + 1)) == (
        "x" * FIELD_LIMIT + f"… ({FIELD_LIMIT + 1} chars)")
    assert not list(tmp_path.iterdir())
    text = ESCAPES + "y" * 1000 + "\nlast line"
    kept = tmp_path / "full.txt"
    assert contained(text, 10, overflow=kept, shown_as="results/x.txt") == (
        SHOWN[:10] + f"… ({len(text)} chars, full text in results/x.txt)")
    assert kept.read_text(encoding="utf-8") == SHOWN + "y" * 1000 + "\nlast line\n"
    # Short enough: no file.
    assert contained("short", 10, overflow=tmp_path / "none.txt") == "short"
    assert not (tmp_path / "none.txt").exists()


def test_contained_strings_reaches_every_string_and_key() -> None:
    document = {"version": ESCAPES, "nested": [{"\x1bkey": 1.5}, None, True, "z" * 300]}
    assert contained_strings(document) == {
        "version": SHOWN, "nested": [{"\\x1bkey": 1.5}, None, True,
                                     "z" * FIELD_LIMIT + "… (300 chars)"]}


def test_markdown_text_leaves_nothing_live() -> None:
    assert markdown_text(f"a|b `code` [x](javascript:y) ![i](http://t) {SCRIPT} & \\| \n") == (
        "a\\|b \\`code\\` \\[x\\](javascript:y) !\\[i\\](http://t) "
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; \\\\\\|  ")
    assert markdown_text("max_accuracy_drop=0.05") == "max_accuracy_drop=0.05"


# --------------------------------------------------------------------------- a hostile board


@pytest.fixture(scope="module")
def hostile_run(tiny_project: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A board whose harness fails with 900 KB of escapes and HTML, and whose runtime
    version (in an ok result's strings) is an escape sequence; then select on it."""
    root = tmp_path_factory.mktemp("hostile")
    error = ESCAPES + SCRIPT + " | `tick` " + "A" * HUGE
    board = LocalDevice(workdir=root / "dev", runtimes=["onnxruntime"],
                        python=board_python(root, result={"status": "failed", "error": error}))
    run = bench_device(tiny_project, "board", board, root / "results" / "board", QUICK)
    farm = Farm(devices={"board": board})
    summary_path = select(RequirementParams(), farm, root / "results",
                          tiny_project.layout.base_model / "reference.json",
                          root / "reports", root / "metrics")
    return {"root": root, "error": error, "record": records(run)["onnx-fp32"],
            "summary": read_json(summary_path)}


def test_a_huge_hostile_error_is_visible_capped_and_kept_whole(hostile_run: dict[str, Any]) -> None:
    root, error, record = hostile_run["root"], hostile_run["error"], hostile_run["record"]
    assert record["status"] == "failed"
    note = f"… ({len(error)} chars, full text in results/board/onnx-fp32.error.txt)"
    assert record["error"] == (SHOWN + SCRIPT + " | `tick` " + "A" * HUGE)[:ERROR_LIMIT] + note
    assert len(record["error"]) == ERROR_LIMIT + len(note)
    # The harness's own copy of the text is capped too (its strings are the device's).
    assert len(record["harness"]["error"]) == FIELD_LIMIT + len(f"… ({len(error)} chars)")
    full = root / "results" / "board" / "onnx-fp32.error.txt"
    assert full.read_text(encoding="utf-8") == visible(error, keep_lines=True) + "\n"
    # Only the result is JSON there: select reads every *.json of a device.
    assert sorted(path.name for path in full.parent.iterdir()) == [
        "onnx-fp32.error.txt", "onnx-fp32.json", "openvino-fp32.json", "tflite-fp32.json"]
    assert (root / "results" / "board" / "onnx-fp32.json").stat().st_size < 5_000


def test_the_summary_and_report_stay_small_and_inert(hostile_run: dict[str, Any]) -> None:
    root, summary = hostile_run["root"], hostile_run["summary"]
    row = next(row for row in summary["results"] if row["variant"] == "onnx-fp32")
    assert (row["status"], row["reasons"]) == ("error", [hostile_run["record"]["error"]])
    assert (root / "reports" / "summary.json").stat().st_size < 10_000
    report = (root / "reports" / "report.md").read_text(encoding="utf-8")
    assert len(report) < 10_000
    assert "<script>" not in report and "\x1b" not in report
    line = next(line for line in report.splitlines() if "| onnx-fp32 |" in line)
    assert line.endswith(f" | {markdown_text(row['reasons'][0])} |")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; \\| \\`tick\\`" in line
    # A table row stays one row: every | inside a cell is escaped.
    assert len(re.findall(r"(?<!\\)\|", line)) == len(COLUMNS) + 2


def test_the_terminal_table_receives_no_escape(hostile_run: dict[str, Any]) -> None:
    text = rendered(summary_table(Summary.model_validate(hostile_run["summary"]),
                                  include_skipped=True))
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J" in text  # shown, not obeyed
    assert len(text) < 20_000


def test_strings_of_an_ok_result_are_contained(tiny_project: Any, tmp_path: Path) -> None:
    """An ok result whose runtime strings are escapes: the record and the summary row
    (runtime version, execution precision) hold them visible and capped."""
    from tests.farm.test_protocol import measured
    from tests.tasks.test_benchmark import IMPOSSIBLE_RESULT

    good = {**IMPOSSIBLE_RESULT, "accuracy": 0.5, "peak_rss_mb": 10.0,
            **measured([1_000_000] * IMPOSSIBLE_RESULT["runs"]),
            "runtime": {**IMPOSSIBLE_RESULT["runtime"], "version": ESCAPES + "v" * 5000,
                        "execution_precision": "f32\x1b[8m"}}
    board = LocalDevice(workdir=tmp_path / "dev", runtimes=["onnxruntime"],
                        python=board_python(tmp_path, result=good))
    run = bench_device(tiny_project, "board", board, tmp_path / "out", QUICK)
    record = records(run)["onnx-fp32"]
    assert record["status"] == "ok", record["error"]
    runtime = record["harness"]["runtime"]
    assert runtime["version"] == (
        (SHOWN + "v" * 5000)[:FIELD_LIMIT] + f"… ({len(ESCAPES) + 5000} chars)")
    assert runtime["execution_precision"] == "f32\\x1b[8m"
    row = evaluate(record, Requirements(max_accuracy_drop=None), reference_accuracy=0.5)
    assert row.runtime_version == runtime["version"]
    assert row.reasons == ["ran in f32\\x1b[8m, not the f32 its variant declares"]


def forging_python(folder: Path, forge: str) -> str:
    """A board's interpreter that runs the real harness, then rewrites its result file:
    ``forge`` is Python statements on ``result`` (the parsed result.json)."""
    script = folder / "forge.py"
    script.write_text("import json, sys\n"
                      "with open(sys.argv[1], encoding='utf-8') as handle:\n"
                      "    result = json.load(handle)\n"
                      f"{forge}\n"
                      "with open(sys.argv[1], 'w', encoding='utf-8') as handle:\n"
                      "    json.dump(result, handle)\n", encoding="utf-8")
    return scripted_python(folder, f'"{sys.executable}" "$@" || exit $?\n'
                                   f'"{sys.executable}" "{script}" "$out"')


@pytest.mark.parametrize("forge, reason", [
    # Issue 25's board: every latency 0.001 ms, accuracy 0.999.
    ("result['latency_ms'] = dict.fromkeys(result['latency_ms'], 0.001)\n"
     "result['accuracy'] = 0.999",
     r"device returned accuracy 0\.999 on 30 images: 29\.97 correct is not a whole number of "
     r"images"),
    ("result['latency_ms'] = dict.fromkeys(result['latency_ms'], 0.001)",
     r"device returned latency_ms\.p50 0\.001, but its (\d+) raw latencies give (\S+)"),
    ("result['throughput_fps'] *= 10",
     r"device returned throughput_fps \S+, but its (\d+) raw latencies give \S+"),
    ("del result['latencies']",
     r"harness result has no raw latencies \('latencies'\): its statistics cannot be checked"),
], ids=["latencies-and-accuracy", "latencies", "throughput", "raw-latencies-dropped"])
def test_a_result_the_board_rewrote_is_refused(tiny_project: Any, tmp_path: Path, forge: str,
                                               reason: str) -> None:
    """A `python:` wrapper that runs the real harness and then rewrites its result.json:
    the statistics are recomputed from the raw latencies it also returned, the accuracy
    must be a count of correct images, and a result that disagrees is refused."""
    board = LocalDevice(workdir=tmp_path / "dev", runtimes=["onnxruntime"],
                        python=forging_python(tmp_path, forge))
    record = records(bench_device(tiny_project, "board", board, tmp_path / "out", QUICK))[
        "onnx-fp32"]
    assert record["status"] == "failed" and "harness" not in record
    refused = re.fullmatch(rf"no valid harness result \({reason}\); .*", record["error"], re.S)
    assert refused, record["error"]
    if refused.groups():  # the real p50 a board this fast gives, not the 0.001 it claimed
        assert int(refused.group(1)) >= QUICK.runs
    if "p50" in reason:
        assert float(refused.group(2)) > 0.001


def test_a_wrapper_that_changes_nothing_passes(tiny_project: Any, tmp_path: Path) -> None:
    """The same wrapper, leaving the result as the harness wrote it: measured, ok."""
    board = LocalDevice(workdir=tmp_path / "dev", runtimes=["onnxruntime"],
                        python=forging_python(tmp_path, "pass"))
    record = records(bench_device(tiny_project, "board", board, tmp_path / "out", QUICK))[
        "onnx-fp32"]
    assert record["status"] == "ok", record["error"]
    assert record["harness"]["accuracy_samples"] == QUICK.accuracy_samples
    assert record["harness"]["latencies"]["count"] == record["harness"]["runs"]


# --------------------------------------------------------------------------- a hostile probe


HOSTILE_PROBE = {"host": {"arch": "x86_64" + ESCAPES, "cpu": SCRIPT + "c" * 5000, "cores": 4},
                 "runtimes": {"onnxruntime": "onnxruntime\x1b[31m"},
                 "runtime_versions": {"onnxruntime": "1.32\x1b]0;x\x07"}}


def test_probe_facts_are_visible_and_capped_in_results(tiny_project: Any, tmp_path: Path) -> None:
    board = LocalDevice(workdir=tmp_path / "dev", runtimes=["onnxruntime"],
                        python=board_python(tmp_path, probe=HOSTILE_PROBE))
    run = bench_device(tiny_project, "board", board, tmp_path / "out", QUICK)
    facts = {"arch": "x86_64" + SHOWN,
             "cpu": (SCRIPT + "c" * 5000)[:FIELD_LIMIT] + "… (5025 chars)",
             "cores": 4, "runtime.onnxruntime": "1.32\\x1b]0;x\\x07"}
    assert run.probe["runtimes"] == {"onnxruntime": "onnxruntime\\x1b[31m"}
    for record in records(run).values():
        assert record["device_facts"] == facts


def failing_python(folder: Path) -> str:
    """A board whose interpreter fails, logging escapes."""
    script = folder / "failing-python"
    script.write_text("#!/bin/sh\nprintf 'board on fire \\033[2J\\033]0;pwned\\007\\n' >&2\n"
                      "exit 3\n", encoding="utf-8")
    script.chmod(0o700)
    return str(script)


def test_probe_one_contains_facts_and_reasons(tmp_path: Path) -> None:
    """What `farm probe` shows of a board: its facts, or why it failed (quoting its log)."""
    from tasks.farm.probe import probe_one

    hostile = LocalDevice(workdir=tmp_path / "dev",
                          python=board_python(tmp_path, probe=HOSTILE_PROBE))
    probe = probe_one("hostile", hostile)
    assert probe.reachable and probe.error is None
    assert probe.facts == {"arch": "x86_64" + SHOWN, "cores": 4,
                           "cpu": (SCRIPT + "c" * 5000)[:FIELD_LIMIT] + "… (5025 chars)"}
    assert probe.runtimes == {"onnxruntime": "1.32\\x1b]0;x\\x07"}

    failing = LocalDevice(workdir=tmp_path / "dev2", python=failing_python(tmp_path))
    probe = probe_one("failing", failing)
    assert not probe.reachable
    assert probe.error == ("RuntimeError: probe failed (exit 3): board on fire " + SHOWN)


def test_farm_probe_prints_no_escape(tmp_path: Path) -> None:
    """`edgeflow farm probe` on a board whose facts are escapes and on one whose probe
    fails logging escapes: the terminal receives them visible, never raw."""
    from typer.testing import CliRunner

    from flows.cli import app

    farm = tmp_path / "farm.yaml"
    farm.write_text(json.dumps({"devices": {
        "hostile": {"workdir": str(tmp_path / "dev1"),
                    "python": board_python(tmp_path, probe=HOSTILE_PROBE)},
        "failing": {"workdir": str(tmp_path / "dev2"), "python": failing_python(tmp_path)}}}),
        encoding="utf-8")

    output = CliRunner().invoke(app, ["farm", "probe", "--farm", str(farm)]).output

    assert "\x1b" not in output and "\x07" not in output, output
    # Shown, not obeyed (rich cuts a long word in a narrow column with "…").
    assert "x86_64\\x1b[2J" in output and "1.32\\x1b]0;x\\x07" in output
    assert "on fire" in output and "(5025 chars)" in output
    assert len(output) < 20_000


def test_every_character_is_itself_a_space_or_an_escape_that_reads_back_as_it() -> None:
    """Every code point of the first planes and some astral ones (issue 27): a hidden one
    is exactly the escape Python reads back as it (\\xNN below 0x100, \\uNNNN, then
    \\UNNNNNNNN), a line break a space, any other itself."""
    import unicodedata

    from tasks.farm.untrusted import HIDDEN_CATEGORIES

    astral = [0x1F600, 0xE0001, 0x1D173, 0x10FFFD]
    for code in [*range(0x3000), *range(0xFFF0, 0x10000), *astral]:
        char = chr(code)
        shown = visible(char)
        if char in "\n\t":
            assert shown == " "
        elif unicodedata.category(char) in HIDDEN_CATEGORIES:
            width = 2 if code < 0x100 else 4 if code < 0x10000 else 8
            assert len(shown) == 2 + width and shown[1] in "xuU", (code, shown)
            assert shown.encode().decode("unicode_escape", "surrogatepass") == char, code
        else:
            assert shown == char, code
    assert visible("\U000e0001\U0001d173") == "\\U000e0001\\U0001d173"
    # One character of each hidden category: Cc, Cf, Cs, Zl, Zp.
    assert visible("\x1b\u200b\ud800\u2028\u2029") == "\\x1b\\u200b\\ud800\\u2028\\u2029"


def test_contained_strings_caps_at_the_limit_it_is_given() -> None:
    document = {"k" * 8: ["v" * 8, {"x": "w" * 5}], "n": 12345678}
    assert contained_strings(document, limit=5) == {
        "kkkkk… (8 chars)": ["vvvvv… (8 chars)", {"x": "wwwww"}], "n": 12345678}
    assert contained("y" * 7, 5, shown_as="ignored") == "yyyyy… (7 chars)"
