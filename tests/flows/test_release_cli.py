"""The release commands of the real ``edgeflow`` on a released project (local devices):
``step release`` says what happened on each device and fails when a release did not
happen; ``status`` exits 1 when a board drifted or cannot be reached."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from tasks.core.layout import Layout
from tasks.release import release_device
from tests.flows.test_cli import EDGEFLOW
from tests.tasks import test_release
from tests.tasks.test_release import FARM, app, farm_of
from tests.tiny import TINY_PARAMS

# The released project's fixtures, shared with the release tests.
tracked, project = test_release.tracked, test_release.project


def edgeflow(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([str(EDGEFLOW), *argv], cwd=cwd, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=600, check=False)


def with_params(layout: Layout) -> Path:
    (layout.root / "params.yaml").write_text(TINY_PARAMS, encoding="utf-8")
    return layout.root


def test_step_release_says_what_happened_on_each_device_and_fails_when_one_did_not_deploy(
        project: Layout) -> None:
    """It printed only ``step release: done`` and exited 0 with ``broken-hook`` refused."""
    ran = edgeflow("step", "release", cwd=with_params(project))
    assert ran.returncode == 1, ran.stdout + ran.stderr
    out = ran.stdout.splitlines()
    assert "step release: done: local released, other released, hooked released, " \
           "broken-hook refused, slow skipped" in out, ran.stdout
    said = {line.split(": ")[1]: line for line in out if line.startswith("release: ")}
    assert list(said) == ["local", "other", "hooked", "broken-hook", "slow"]
    assert said["broken-hook"].startswith("release: broken-hook: refused: broken-hook keeps its "
                                          "release: on_release failed (exit 4: no service)")
    assert said["slow"] == "release: slow: skipped: no variant passed the requirements on slow"
    assert ran.stderr.strip() == ("edgeflow: error: release refused on broken-hook (the lines "
                                  "above say why)")
    # What did not deploy is not stamped as done: `edgeflow run` tries it again.
    stamps = project.state / "stamps"
    assert (stamps / "release-local.json").is_file()
    assert not (stamps / "release-broken-hook.json").exists()


def test_status_exits_1_when_a_board_drifted_or_cannot_be_reached(
        project: Layout, tiny_project: Any) -> None:
    """It exited 0 whatever it showed; a deleted current release showed as ``None (id)``
    with no drift."""
    root = with_params(project)
    released = release_device(tiny_project.params, farm_of(project), project, "local")
    assert released.status == "released"
    fine = edgeflow("status", cwd=root)
    assert (fine.returncode, fine.stderr) == (0, ""), fine.stdout + fine.stderr

    key = root / "ghost_key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o600)
    (root / "farm.yaml").write_text(
        FARM + f"  ghost: {{transport: ssh, host: 127.0.0.1, port: 1, user: pi, key_file: "
               f"'{key}', known_hosts: known_hosts, connect_attempts: 1}}\n", encoding="utf-8")
    down = edgeflow("status", cwd=root)
    assert down.returncode == 1
    assert down.stderr.strip() == "edgeflow: error: unreachable: ghost (the table says why)"

    shutil.rmtree(app(project, "local") / "releases" / released.release_id)
    gone = edgeflow("status", cwd=root)
    assert gone.returncode == 1
    assert f"missing ({released.release_id}" in gone.stdout
    assert (f"drift on local: the board's current release {released.release_id} is missing "
            "(its folder or its manifest is gone)") in gone.stdout
    assert gone.stderr.strip() == ("edgeflow: error: drift on local; unreachable: ghost (the "
                                   "table says why)")


def test_a_damaged_release_record_is_one_line_not_a_traceback(
        project: Layout, tiny_project: Any) -> None:
    """A status outside the allowed ones in ``releases/<device>/release.json`` (edited
    by hand): ``rollback`` and ``release`` say so in one line, exit 1 (a StepError)."""
    root = with_params(project)
    assert release_device(tiny_project.params, farm_of(project), project,
                          "local").status == "released"
    record = project.device_releases("local") / "release.json"
    record.write_text(record.read_text(encoding="utf-8").replace(
        '"status": "released"', '"status": "exploded"'), encoding="utf-8")
    for argv in (("rollback", "local"), ("release", "local", "--yes")):
        ran = edgeflow(*argv, cwd=root)
        assert (ran.returncode, ran.stdout) == (1, ""), ran.stdout + ran.stderr
        assert ran.stderr == (
            f"edgeflow: error: {record} is damaged (attempt 1 has status 'exploded', not one "
            "of 'released', 'rolled back', 'unchanged', 'skipped', 'refused', 'failed'): fix "
            "or delete it\n"), argv
