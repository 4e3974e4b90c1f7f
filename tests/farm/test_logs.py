"""tasks.farm.logs on this machine: a command's output goes to files, and only a log's
bounded last line comes back."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tasks.farm.logs import LOG_TAIL_BYTES, log_tail, to_files
from tasks.farm.transports import LocalConnection


def test_a_commands_output_goes_to_its_two_files_quoted() -> None:
    assert to_files(["python3", "h py", "--probe"], "/w/p.json", "/w/a b.log") == (
        "python3 'h py' --probe > /w/p.json 2> '/w/a b.log'")


def test_each_stream_lands_in_its_own_file(tmp_path: Path) -> None:
    out, err = tmp_path / "o b", tmp_path / "e"
    command = to_files(["sh", "-c", "echo out; echo err >&2"], str(out), str(err))
    assert subprocess.run(command, shell=True, timeout=30).returncode == 0
    assert (out.read_text(), err.read_text()) == ("out\n", "err\n")


def test_a_log_tail_is_its_last_non_blank_line_within_the_last_bytes(tmp_path: Path) -> None:
    log = tmp_path / "harness.log"
    log.write_bytes(b"first\n" + b"x" * 10_000 + b"\nTraceback ...\nValueError: bad \xff\n\n")
    assert log_tail(LocalConnection(), str(log)) == "ValueError: bad \ufffd"
    log.write_bytes(b"a" * 4000 + b"b" * 300)  # one long line: its last 300 characters
    assert log_tail(LocalConnection(), str(log)) == "b" * 300
    assert log_tail(LocalConnection(), str(tmp_path / "absent.log")) == ""
    assert log_tail(LocalConnection(), str(tmp_path)) == ""  # not a regular file


def test_a_log_tail_asks_the_device_for_its_last_bytes_only() -> None:
    class Spy:
        asked: list[tuple[str, int, bool]] = []

        def read_file(self, remote: str, limit: int, tail: bool = False) -> bytes:
            self.asked.append((remote, limit, tail))
            return b"last words\n"

    spy = Spy()
    assert log_tail(spy, "/w/probe.log") == "last words"  # type: ignore[arg-type]
    assert spy.asked == [("/w/probe.log", 4096, True)] and LOG_TAIL_BYTES == 4096
