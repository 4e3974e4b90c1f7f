"""benchmarks/fleet.py end to end on a small fleet: five real OpenSSH boards on loopback
(one sshd each) benchmarked through the flow's fan-out with the sleeping harness
stand-in; every board's result is a checked ``ok`` one and the table reports each board
on a connection of its own at the peak."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.sshd import sshd_available

REPO = Path(__file__).resolve().parents[2]


def test_a_fleet_of_five_ssh_boards_is_benchmarked_end_to_end(tiny_project: Any,
                                                               tmp_path: Path) -> None:
    if os.geteuid() != 0 or not sshd_available():
        pytest.skip("needs root and an OpenSSH server")
    environment = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    environment.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fleet.py"), "--sizes", "1", "5",
         "--sleep", "0.5", "--max-parallel", "4", "--root", str(tiny_project.layout.root)],
        capture_output=True, text=True, timeout=600, env=environment, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {int(match[1]): match[2].split() for match in
            re.finditer(r"^\s*(\d+)\s+(\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+\d+\s+\d+\s+\d+/\d+"
                        r"\s+[\d.]+)$", done.stdout, re.MULTILINE)}
    assert set(rows) == {1, 5}, done.stdout
    parallel, wall, ratio, cpu, connections, _, outcome, board_cpu = rows[5]
    assert parallel == "4"  # farm.yaml's max_parallel, as given
    assert outcome == "5/0" and rows[1][-2] == "1/0"
    assert int(connections) == 4  # one per board at work, max_parallel of them at once
    assert int(rows[1][4]) == 1
    assert float(wall) >= 0.5 and float(ratio) > 0 and float(cpu) > 0
    assert float(board_cpu) > 0  # the boards' sshd sessions did work
    assert "goal at N=5:" in done.stdout
