"""``edgeflow remote setup`` as a user runs it: a real DVC project, DVC's own config
files read back; a bad URL is one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def _edgeflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "edgeflow"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "400"})


def test_a_bad_url_is_one_line_naming_the_allowed_schemes_and_exit_2(tmp_path: Path) -> None:
    done = _edgeflow("remote", "setup", "ftp://files.lan/dvc", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "edgeflow: error: remote URL 'ftp://files.lan/dvc': ftp scheme; allowed schemes: "
        "ssh://[user@]host[:port]/absolute/path, s3://bucket[/prefix]")


def test_setup_writes_dvcs_config_and_says_the_default_remote_is_private(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "--quiet"], cwd=tmp_path, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "--quiet"], cwd=tmp_path, check=True)
    key = tmp_path / "id_ed25519"
    done = _edgeflow("remote", "setup", "ssh://dvc@nas.lan:2222/srv/dvc", "--keyfile", str(key),
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shared = (tmp_path / ".dvc" / "config").read_text()
    assert "remote = team" in shared and "url = ssh://dvc@nas.lan:2222/srv/dvc" in shared
    assert "keyfile" not in shared
    assert f"keyfile = {key}" in (tmp_path / ".dvc" / "config.local").read_text()
    lines = done.stdout.splitlines()
    assert lines[0] == "dvc remote add --force --default team ssh://dvc@nas.lan:2222/srv/dvc"
    assert "private to you on this machine" in lines[-1] and "(commit it)" in lines[-1]


def test_outside_a_dvc_project_dvcs_own_error_is_one_line(tmp_path: Path) -> None:
    done = _edgeflow("remote", "setup", "s3://bucket/dvc", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (f"edgeflow: error: dvc remote add in {tmp_path.resolve()}: ERROR: "
                           "configuration error - config file error: Not inside a DVC repo\n")
