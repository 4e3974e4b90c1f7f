"""A release to a real SSH board (OpenSSH on loopback): pushed through the verified push,
health-checked and made current there, the predictor run over SSH agreeing with Keras
on 20 images each of its three ways (command line, Python, HTTP), a rollback, and a
board that loses power during a release."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from tasks.config import Farm
from tasks.core.layout import Layout
from tasks.farm.transports import connect
from tasks.release import device_state, release_device, rollback_device
from tests.helpers import ssh_device
from tests.sshd import SshServer
from tests.tasks import test_release
from tests.tasks.test_release import YES, alias_version

# The released project's fixtures, shared with the local tests.
tracked, project = test_release.tracked, test_release.project


IN_PYTHON = """
import json, sys
sys.path.insert(0, sys.argv[1] + "/current")
from PIL import Image
from predict import Model
model = Model(sys.argv[1] + "/current")
for name in sys.argv[2:]:
    pixels = Image.open(sys.argv[1] + "/current/check/" + name)
    print(json.dumps(model.predict(__import__("numpy").asarray(pixels))))
"""
# The application's side of --serve: the server started on the board, images POSTed to it
# from the board, the server stopped.
OVER_HTTP = """
import json, subprocess, sys, urllib.request
app = sys.argv[1]
server = subprocess.Popen([sys.executable, app + "/current/predict.py", "--serve", "--port", "0"],
                          stdout=subprocess.PIPE, text=True)
try:
    url = json.loads(server.stdout.readline())["serving"]
    for name in sys.argv[2:]:
        with open(app + "/current/check/" + name, "rb") as image:
            request = urllib.request.Request(url, data=image.read())
        with urllib.request.urlopen(request, timeout=30) as answer:
            print(answer.read().decode().strip())
finally:
    server.terminate()
    server.wait(timeout=30)
"""


def _on_board(board: Any, app: Path, names: list[str], script: str) -> list[int]:
    """The classes ``script`` (run on the board by its interpreter) printed."""
    connection = connect(board, "board")
    try:
        ran = connection.run(shlex.join([board.harness_python(), "-c", script, str(app), *names]),
                             timeout=120)
    finally:
        connection.close()
    assert ran.exited == 0, ran.stderr
    return [json.loads(line)["index"] for line in ran.stdout.splitlines()]


def test_a_release_to_an_ssh_board_is_current_there_and_its_predictor_agrees_with_keras(
        project: Layout, tiny_project: Any, ssh_server: SshServer, tmp_path: Path) -> None:
    import keras
    from PIL import Image

    board = ssh_device(ssh_server, tmp_path / "board")
    farm = Farm(devices={"board": board})
    variants = [entry["name"] for entry in json.loads(project.variants_index.read_text())["variants"]
                if entry["status"] == "ok" and entry["runtime"] in ("tflite", "onnxruntime")]
    first = release_device(tiny_project.params, farm, project, "board", variant=variants[0],
                           approve=YES)
    assert first.status == "released", first.message
    app = tmp_path / "board" / "app"
    assert (app / "current").readlink() == Path(f"releases/{first.release_id}")
    assert alias_version(project, "board") == first.mlflow_version
    # Pushed owner-only over SFTP, then readable by the board user's group (the default).
    assert test_release.modes(app) == ({"0o640"}, {"0o750"})

    manifest = json.loads((app / "current" / "manifest.json").read_text())
    names = manifest["check"]["images"][:20]
    connection = connect(board, "board")
    try:
        ran = connection.run(shlex.join([board.harness_python(), f"{app}/current/predict.py",
                                         *(f"{app}/current/check/{name}" for name in names)]))
    finally:
        connection.close()
    assert ran.exited == 0, ran.stderr
    predicted = [json.loads(line)["index"] for line in ran.stdout.splitlines()]
    images = np.stack([np.asarray(Image.open(app / "current" / "check" / name), np.float32)[..., None]
                       / 255 for name in names])
    keras_model = keras.models.load_model(project.base_model / "model.keras")
    expected = list(np.argmax(keras_model.predict(images, verbose=0), axis=1))
    assert predicted == expected
    # The same on the board through the Python API and through its HTTP server.
    assert _on_board(board, app, names, IN_PYTHON) == expected
    assert _on_board(board, app, names, OVER_HTTP) == expected

    second = release_device(tiny_project.params, farm, project, "board", variant=variants[1],
                            approve=YES)
    assert second.status == "released"
    back = rollback_device(farm, project, "board")
    assert (back.status, back.release_id) == ("rolled back", first.release_id)
    assert alias_version(project, "board") == first.mlflow_version
    assert device_state(farm, project, "board")["drift"] is None


def test_a_board_killed_during_a_release_keeps_a_complete_current_release(
        project: Layout, tiny_project: Any, doomed_server: SshServer, tmp_path: Path) -> None:
    """The board loses power while the new release's health check runs on it: the
    release fails with the reason, and ``current`` is still the previous release, whole
    (its predictor loads it, its files verified)."""
    import threading
    import time

    from tasks.core import device_code
    from tests.helpers import processes_mentioning
    from tests.sshd import stop_sshd

    board = ssh_device(doomed_server, tmp_path / "board", connect_attempts=1)
    farm = Farm(devices={"board": board})
    variants = [entry["name"] for entry in json.loads(project.variants_index.read_text())["variants"]
                if entry["status"] == "ok" and entry["runtime"] in ("tflite", "onnxruntime")]
    first = release_device(tiny_project.params, farm, project, "board", variant=variants[0],
                           approve=YES)
    assert first.status == "released"
    releases = str(tmp_path / "board" / "app" / "releases")
    killed: list[str] = []

    def kill_during_the_check() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            checking = [line for line in processes_mentioning(releases) if "--check" in line]
            if checking:
                stop_sshd(doomed_server, kill_sessions=True)  # the board loses power
                killed.extend(checking)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_during_the_check)
    killer.start()
    second = release_device(tiny_project.params, farm, project, "board", variant=variants[1],
                            approve=YES)
    killer.join()
    assert killed, "the health check was never seen running"
    assert second.status == "failed" and second.message.startswith(
        "whether board switched is unknown: ")
    # It said "the device's release manager failed: exit code -1".
    assert ": the connection to the device was lost (no exit status: the device or its SSH " \
        "server went away)" in second.message, second.message
    app = tmp_path / "board" / "app"
    assert (app / "current").readlink() == Path(f"releases/{first.release_id}")
    model = device_code.predictor().Model(str(app / "current"))  # loads: complete, verified
    assert model.manifest["variant"] == variants[0]


def test_ctrl_c_while_the_board_waits_for_its_lock_stops_the_release_there(
        project: Layout, tiny_project: Any, ssh_server: SshServer, tmp_path: Path) -> None:
    """`edgeflow release` to a board whose device lock another process holds: Ctrl-C
    while the board's activation waits for the lock ends edgeflow within seconds (130),
    the activation is stopped on the board, and ``current``, edgeflow's record and the
    MLflow alias all still say the previous release."""
    import fcntl
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from flows.cli.process import INTERRUPTED_EXIT
    from tasks.farm.protocol import LOCK_NAME
    from tasks.release import read_record
    from tests.helpers import processes_left, processes_mentioning

    workdir = tmp_path / "board"
    board = ssh_device(ssh_server, workdir)
    farm = Farm(devices={"board": board})
    shutil.copyfile(tiny_project.layout.root / "params.yaml", project.root / "params.yaml")
    farm_file = project.root / "farm-ssh.yaml"
    farm_file.write_text(json.dumps({"devices": {"board": board.model_dump(mode="json")}}))
    variants = [entry["name"] for entry in json.loads(project.variants_index.read_text())["variants"]
                if entry["status"] == "ok" and entry["runtime"] in ("tflite", "onnxruntime")]
    first = release_device(tiny_project.params, farm, project, "board", variant=variants[0],
                           approve=YES)
    assert first.status == "released", first.message
    app = workdir / "app"
    # Another process (a benchmark, another release) holds the board's device lock.
    holder = open(workdir / LOCK_NAME, "a")  # noqa: SIM115 - held until the end
    fcntl.flock(holder, fcntl.LOCK_EX)
    child = None
    try:
        child = subprocess.Popen(
            [str(Path(sys.executable).parent / "edgeflow"), "release", "board", "--variant",
             variants[1], "--yes", "--farm", str(farm_file)],
            cwd=project.root, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not [line for line in processes_mentioning(f"{app}/releases.py")
                   if line.startswith("flock ") and " activate " in line]:
            assert child.poll() is None, f"the release ended first: {child.communicate()}"
            assert time.monotonic() < deadline, "the activation never waited for the lock"
            time.sleep(0.1)
        started = time.monotonic()
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
        seconds = time.monotonic() - started
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        holder.close()
    assert child.returncode == INTERRUPTED_EXIT, stderr
    assert "edgeflow: interrupted" in stderr and "Traceback" not in stderr, stderr
    assert seconds < 15
    assert processes_left(f"{app}/releases.py") == []
    # Nothing moved: the board, the record and the alias say the first release.
    assert (app / "current").readlink() == Path(f"releases/{first.release_id}")
    # The folder pushed for the stopped release is not left on the board.
    assert sorted(path.name for path in (app / "releases").iterdir()) == [first.release_id]
    assert read_record(project, "board")["current"]["release"] == first.release_id
    assert alias_version(project, "board") == first.mlflow_version
    assert device_state(farm, project, "board")["drift"] is None
    control = app.parent / "release-control"
    assert not control.exists() or list(control.iterdir()) == []


def test_a_stopped_release_is_removed_only_once_its_command_ended_and_never_when_current(
        ssh_server: SshServer, tmp_path: Path, monkeypatch: Any) -> None:
    """After a stop, the folder pushed for the release goes once the activation's
    command has ended (its control folder gone), never while it still runs (past the
    switch) and never when it is ``current``."""
    from tasks.farm import releases as farm_releases

    monkeypatch.setattr(farm_releases, "STOPPED_END_SECONDS", 0.5)
    board = ssh_device(ssh_server, tmp_path / "board")
    app = tmp_path / "board" / "app"
    control = tmp_path / "board" / farm_releases.CONTROL_DIR
    ids = [f"2026120{day}T000000000000Z-v{day}" for day in (1, 2, 3)]
    for name in ids:
        (app / "releases" / name).mkdir(parents=True)
        (app / "releases" / name / "manifest.json").write_text("{}")
    (app / "current").symlink_to(f"releases/{ids[0]}")
    (control / ids[2]).mkdir(parents=True)  # its command still runs
    connection = connect(board, "board")
    try:
        for name in ids:
            farm_releases._discard_stopped(connection, str(app), name, str(control / name))
    finally:
        connection.close()
    assert sorted(path.name for path in (app / "releases").iterdir()) == [ids[0], ids[2]]
