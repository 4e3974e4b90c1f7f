"""The release step on real local devices: a release health-checked in its own folder
and made current, nothing done twice, a failed check or on_release leaving the device on
its previous release, rollback, the MLflow registry and aliases, and the predictor an
application uses, three ways, agreeing with Keras on the released images."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.core import device_code
from tasks.config import BenchmarkParams, load_farm
from tasks.core.layout import Layout
from tasks.release import device_state, read_record, release_device, rollback_device
from tasks.release.outcome import REFUSED, RELEASED, ROLLED_BACK
from tasks.release.registry import alias, registered_model_name
from tasks.track import track
from tests.helpers import benchmarked_copy

FARM = """\
devices:
  local: {threads: 1, workdir: .edgeflow/devices/local}
  other: {threads: 1, workdir: .edgeflow/devices/other}
  hooked: {threads: 1, workdir: .edgeflow/devices/hooked, on_release: "echo restarted >> $1/../../hook.log"}
  broken-hook: {threads: 1, workdir: .edgeflow/devices/broken-hook, on_release: "echo no service >&2; exit 4"}
  slow: {threads: 1, workdir: .edgeflow/devices/slow, requirements: {max_latency_p90_ms: 0.000001}}
"""
YES = lambda *_: True  # noqa: E731 - a person approving every release by hand
QUICK = BenchmarkParams(warmup_runs=2, warmup_seconds=0.0, runs=10, seconds=0.01,
                        max_seconds=0.05, accuracy_samples=0, timeout_seconds=60)


@pytest.fixture(scope="module")
def tracked(tiny_project: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project after benchmark, select and track on five local devices."""
    root = tmp_path_factory.mktemp("released") / "project"
    layout = benchmarked_copy(tiny_project, root, FARM, QUICK)
    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        track(tiny_project.params.model_dump(mode="json"), layout)
    finally:
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    return root


@pytest.fixture()
def project(tracked: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    """A fresh copy of the tracked project (its MLflow store included)."""
    root = tmp_path / "project"
    shutil.copytree(tracked, root, symlinks=True)
    record = root / "metrics" / "mlflow_run.json"
    document = json.loads(record.read_text())
    document["tracking_uri"] = f"sqlite:///{(root / 'mlflow' / 'mlflow.db').resolve()}"
    record.write_text(json.dumps(document))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Layout(root)


def farm_of(layout: Layout) -> Any:
    return load_farm(layout.root / "farm.yaml")


def app(layout: Layout, device: str) -> Path:
    return layout.root / ".edgeflow" / "devices" / device / "app"


def current(layout: Layout, device: str) -> str | None:
    link = app(layout, device) / "current"
    return os.readlink(link) if link.is_symlink() else None


def alias_version(layout: Layout, device: str) -> str:
    from mlflow import MlflowClient

    uri = f"sqlite:///{(layout.root / 'mlflow' / 'mlflow.db').resolve()}"
    return str(MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(
        registered_model_name(layout), alias(device)).version)


def test_the_recommended_variant_is_released_checked_and_registered_then_not_again(
        project: Layout, tiny_project: Any) -> None:
    params, farm = tiny_project.params, farm_of(project)
    summary = json.loads(project.summary.read_text())
    recommended = summary["recommendations"]["local"]
    assert recommended is not None

    from tasks.core import notices

    seen: list[str] = []
    with notices.listening(lambda notice: seen.append(
            notice.line() if isinstance(notice, notices.Progress) else notice.message)):
        first = release_device(params, farm, project, "local")
    assert (first.status, first.variant) == ("released", recommended)
    assert seen == ["release[local]: 0/2", f"release[local]: 1/2 {recommended} (built)",
                    f"release[local]: 2/2 {recommended} (released)"]
    assert current(project, "local") == f"releases/{first.release_id}"
    folder = app(project, "local") / "current"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["variant"] == recommended and manifest["device"] == "local"
    assert manifest["mlflow"]["version"] == first.mlflow_version == alias_version(project, "local")
    # The predictor loads the artifact with the device's threads, read from the manifest.
    assert manifest["threads"] == farm.devices["local"].threads
    health = json.loads((folder / "health.json").read_text())
    assert health["passed"] is True and health["images"] == params.release.check_images
    # The manifest lists every file of the release folder but itself, its digest and the
    # health.json the board's check wrote.
    on_board = {path.relative_to(folder.resolve()).as_posix()
                for path in folder.resolve().rglob("*") if path.is_file()}
    assert {entry["path"] for entry in manifest["files"]} == on_board - {
        "manifest.json", "manifest.sha256", "health.json"}
    assert health["latency_runs"] >= 100
    # release.readable_by: group (the default): an application running as another user of
    # the device user's group reads the release, through a workdir it may search.
    assert modes(app(project, "local")) == ({"0o640"}, {"0o750"})
    assert (app(project, "local").parent.stat().st_mode & 0o070) == 0o010
    assert read_record(project, "local")["current"]["release"] == first.release_id

    second = release_device(params, farm, project, "local")
    assert (second.status, second.release_id) == ("unchanged", first.release_id)
    assert len(os.listdir(app(project, "local") / "releases")) == 1
    # The same variant on another device: the same registry version, another alias; there
    # the releases are the device user's only.
    owner_only = params.model_copy(update={"release": params.release.model_copy(
        update={"readable_by": "owner"})})
    other = release_device(owner_only, farm, project, "other")
    assert other.mlflow_version == first.mlflow_version == alias_version(project, "other")
    assert modes(app(project, "other")) == ({"0o600"}, {"0o700"})


def modes(folder: Path) -> tuple[set[str], set[str]]:
    """The modes of the files and of the folders under ``folder`` (itself included)."""
    paths = [folder, *folder.rglob("*")]
    return ({oct(path.stat().st_mode & 0o777) for path in paths
             if path.is_file() and not path.is_symlink() and path.parent != folder},
            {oct(path.stat().st_mode & 0o777) for path in paths
             if path.is_dir() and not path.is_symlink()})


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_registry_snippet(device: str) -> str:
    """The README's registry lookup, as a user copies it, for ``device``."""
    blocks = README.read_text(encoding="utf-8").split("```python\n")[1:]
    code = next(block.split("```")[0] for block in blocks
                if "get_model_version_by_alias" in block.split("```")[0])
    return code.replace("pi5", device)


def test_the_readme_registry_lookup_run_in_the_experiment_folder_finds_the_alias(
        project: Layout, tiny_project: Any) -> None:
    released = release_device(tiny_project.params, farm_of(project), project, "local")
    assert released.status == "released"
    done = subprocess.run([sys.executable, "-c", readme_registry_snippet("local")],
                          cwd=project.root, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    version, source = done.stdout.split()
    assert version == released.mlflow_version
    record = read_record(project, "local")["current"]["mlflow"]
    assert record["model_id"] in source  # the logged model the version was made from
    assert not (project.root / "mlflow.db").exists()  # no stray store where it ran


def test_rollback_returns_to_the_previous_release_and_moves_the_alias(
        project: Layout, tiny_project: Any) -> None:
    params, farm = tiny_project.params, farm_of(project)
    first = release_device(params, farm, project, "local")
    others = [name for name in json.loads(project.variants_index.read_text())["variants"]
              if name["status"] == "ok" and name["name"] != first.variant]
    second = release_device(params, farm, project, "local", variant=others[0]["name"],
                            approve=YES)
    assert second.status == "released" and second.mlflow_version != first.mlflow_version
    assert alias_version(project, "local") == second.mlflow_version

    back = rollback_device(farm, project, "local", readable_by="owner")
    assert (back.status, back.release_id, back.variant) == ("rolled back", first.release_id,
                                                             first.variant)
    assert current(project, "local") == f"releases/{first.release_id}"
    # What the manager wrote is as readable as release.readable_by says (not the default).
    assert oct((app(project, "local") / "state.json").stat().st_mode & 0o777) == "0o600"
    assert alias_version(project, "local") == first.mlflow_version
    state = device_state(farm, project, "local")
    assert state["drift"] is None
    assert [entry["release"] for entry in state["board"]["rolled_back"]] == [second.release_id]
    # Auto does not undo a person's rollback; by hand does.
    params_auto = params.model_copy(update={"release": params.release.model_copy(
        update={"policy": "auto"})})
    summary = json.loads(project.summary.read_text())
    summary["recommendations"]["local"] = second.variant
    project.summary.write_text(json.dumps(summary))
    again = release_device(params_auto, farm, project, "local")
    assert again.status == "skipped" and "rolled back" in again.message
    assert current(project, "local") == f"releases/{first.release_id}"
    # Nothing earlier to go back to: refused, current kept.
    nothing = rollback_device(farm, project, "local")
    assert nothing.status == "refused" and current(project, "local") == f"releases/{first.release_id}"


def test_approvals_decide_releases_by_hand_and_under_policy_approve(
        project: Layout, tiny_project: Any) -> None:
    params, farm = tiny_project.params, farm_of(project)
    asked: list[tuple[str, str, str]] = []

    def no(device: str, variant: str, change: str) -> bool:
        asked.append((device, variant, change))
        return False

    recommended = json.loads(project.summary.read_text())["recommendations"]["local"]
    declined = release_device(params, farm, project, "local", variant=recommended, approve=no)
    assert declined.status == "skipped" and "not approved" in declined.message
    assert declined.pending and not declined.settled  # the next run asks again
    assert asked == [("local", recommended, f"nothing -> {recommended}")]
    assert current(project, "local") is None
    by_hand_unasked = release_device(params, farm, project, "local", variant=recommended)
    assert by_hand_unasked.status == "skipped" and "nobody can approve" in by_hand_unasked.message

    approve = params.model_copy(update={"release": params.release.model_copy(
        update={"policy": "approve"})})
    assert release_device(approve, farm, project, "local").status == "skipped"  # dvc repro
    assert current(project, "local") is None
    released = release_device(approve, farm, project, "local", approve=YES)
    assert released.status == "released" and current(project, "local") is not None
    off = params.model_copy(update={"release": params.release.model_copy(update={"policy": "off"})})
    assert release_device(off, farm, project, "other").message == "release.policy is off"


def test_a_failed_health_check_keeps_the_current_release(project: Layout,
                                                          tiny_project: Any) -> None:
    """``slow`` requires a p90 no model reaches: nothing passed there, and a release by
    hand fails its health check on the device; nothing becomes current."""
    params, farm = tiny_project.params, farm_of(project)
    assert json.loads(project.summary.read_text())["recommendations"]["slow"] is None
    assert release_device(params, farm, project, "slow").status == "skipped"
    refused = release_device(params, farm, project, "slow",
                             variant=json.loads(project.summary.read_text())
                             ["recommendations"]["local"], approve=YES)
    assert refused.status == "refused" and "p90 latency" in refused.message
    assert current(project, "slow") is None
    # Issue 25 item 8: the refused release is not left on the board.
    assert os.listdir(app(project, "slow") / "releases") == []


def test_on_release_runs_after_the_switch_and_a_failing_one_undoes_it(
        project: Layout, tiny_project: Any) -> None:
    params, farm = tiny_project.params, farm_of(project)
    done = release_device(params, farm, project, "hooked")
    assert done.status == "released"
    assert (app(project, "hooked") / "hook.log").read_text() == "restarted\n"

    failed = release_device(params, farm, project, "broken-hook")
    assert failed.status == "refused"
    assert "on_release failed (exit 4: no service)" in failed.message
    assert current(project, "broken-hook") is None  # the first release: nothing to restore
    assert os.listdir(app(project, "broken-hook") / "releases") == []  # nor the undone one


def test_a_release_the_busy_board_never_activated_is_not_left_there(
        project: Layout, tiny_project: Any) -> None:
    """Issue 25 item 8: the device lock held by someone else past the wait: the release
    fails, and the folder pushed for it is removed."""
    from tasks.farm.protocol import LOCK_NAME

    params = tiny_project.params
    impatient = params.model_copy(update={"benchmark": params.benchmark.model_copy(
        update={"lock_timeout_seconds": 1.0})})
    workdir = app(project, "local").parent
    workdir.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(["flock", str(workdir / LOCK_NAME), "sleep", "60"])
    try:
        time.sleep(0.5)
        failed = release_device(impatient, farm_of(project), project, "local")
    finally:
        holder.kill()
        holder.wait()
    assert failed.status == "failed" and "stayed busy" in failed.message
    assert current(project, "local") is None
    assert os.listdir(app(project, "local") / "releases") == []


def test_a_device_missing_from_the_farm_or_a_variant_not_produced_is_refused(
        project: Layout, tiny_project: Any) -> None:
    from tasks.core.errors import ConfigError

    params, farm = tiny_project.params, farm_of(project)
    with pytest.raises(ConfigError, match=r"unknown device 'nope' \(farm.yaml has: local, "):
        release_device(params, farm, project, "nope")
    with pytest.raises(ConfigError, match=r"variant 'tflite-int4' is not in"):
        release_device(params, farm, project, "local", variant="tflite-int4")


# ------------------------------------------------------------------ the predictor, 3 ways


@pytest.fixture()
def released(project: Layout, tiny_project: Any) -> tuple[Path, np.ndarray]:
    """The local device's current release and Keras's logits on its check images, as
    the predictor decodes them (PNG pixels / 255)."""
    import keras
    from PIL import Image

    outcome = release_device(tiny_project.params, farm_of(project), project, "local")
    folder = app(project, "local") / "current"
    assert outcome.status == "released"
    manifest = json.loads((folder / "manifest.json").read_text())
    images = np.stack([np.asarray(Image.open(folder / "check" / name), np.float32)[..., None] / 255
                       for name in manifest["check"]["images"][:20]])
    model = keras.models.load_model(project.base_model / "model.keras")
    return folder, np.asarray(model.predict(images, verbose=0))


def test_the_predictor_agrees_with_keras_from_the_command_line(released: Any) -> None:
    folder, keras_logits = released
    manifest = json.loads((folder / "manifest.json").read_text())
    images = [str(folder / "check" / name) for name in manifest["check"]["images"][:20]]
    done = subprocess.run([sys.executable, str(folder / "predict.py"), *images],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["image"] for line in lines] == images
    assert [line["index"] for line in lines] == list(np.argmax(keras_logits, axis=1))
    assert [line["class"] for line in lines] == [manifest["classes"][line["index"]] for line in lines]
    assert all(0.0 < line["score"] <= 1.0 and line["latency_ms"] > 0 for line in lines)


def test_the_predictor_agrees_with_keras_in_python_on_raw_arrays_of_any_size(
        released: Any) -> None:
    from PIL import Image

    folder, keras_logits = released
    predictor = device_code.predictor()
    model = predictor.Model(str(folder))
    manifest = model.manifest
    for index, name in enumerate(manifest["check"]["images"][:20]):
        pixels = np.asarray(Image.open(folder / "check" / name))
        assert model.predict(pixels)["index"] == int(np.argmax(keras_logits[index]))
    # A bigger RGB photo of the first image: resized and turned grey by the predictor.
    big = np.asarray(Image.open(folder / "check" / manifest["check"]["images"][0])
                     .convert("RGB").resize((96, 96)))
    assert model.predict(big)["class"] in manifest["classes"]
    with pytest.raises(predictor.ImageError, match=r"not \(2, 2, 2\)"):
        model.predict(np.zeros((2, 2, 2), np.uint8))


def test_the_predictor_takes_opencv_bgr_arrays_when_told_and_fits_as_trained(
        released: Any) -> None:
    folder, _ = released
    model = device_code.predictor().Model(str(folder))
    assert (model.manifest["input"]["fit"], model.fit) == ("squash", "squash")
    rgb = np.zeros((30, 50, 3), np.uint8)
    rgb[5:25, 10:40] = (250, 120, 0)  # orange on black: its grey differs from BGR's
    bgr = rgb[..., ::-1].copy()
    np.testing.assert_array_equal(model.prepare(bgr, channels="bgr"), model.prepare(rgb))
    assert not np.array_equal(model.prepare(bgr), model.prepare(rgb))
    assert model.predict(bgr, channels="bgr") | {"latency_ms": 0} \
        == model.predict(rgb) | {"latency_ms": 0}


def test_the_predictor_serves_http_and_answers_a_bad_image_with_400(released: Any) -> None:
    folder, keras_logits = released
    manifest = json.loads((folder / "manifest.json").read_text())
    server = subprocess.Popen([sys.executable, str(folder / "predict.py"), "--serve", "--port",
                               "0", "--max-bytes", "4096"], stdout=subprocess.PIPE, text=True)
    try:
        url = json.loads(server.stdout.readline())["serving"]  # type: ignore[union-attr]
        for index, name in enumerate(manifest["check"]["images"][:20]):
            body = (folder / "check" / name).read_bytes()
            with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as answer:
                assert json.loads(answer.read())["index"] == int(np.argmax(keras_logits[index]))
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(urllib.request.Request(url, data=b"not an image"), timeout=30)
        assert bad.value.code == 400 and "not an image" in json.loads(bad.value.read())["error"]
        with pytest.raises(urllib.error.HTTPError) as big:
            urllib.request.urlopen(urllib.request.Request(url, data=b"x" * 5000), timeout=30)
        assert big.value.code == 413
        # --max-bytes is the largest body read: exactly that many is decoded, one more is not.
        with pytest.raises(urllib.error.HTTPError) as at_most:
            urllib.request.urlopen(urllib.request.Request(url, data=b"x" * 4096), timeout=30)
        assert at_most.value.code == 400
        assert "not an image" in json.loads(at_most.value.read())["error"]
        with pytest.raises(urllib.error.HTTPError) as over:
            urllib.request.urlopen(urllib.request.Request(url, data=b"x" * 4097), timeout=30)
        assert over.value.code == 413
        assert json.loads(over.value.read())["error"] == (
            "the image is 4097 bytes, more than the 4096 allowed")
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextlib.contextmanager
def serving(folder: Path, *options: str) -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    """``predict.py --serve`` of the release in ``folder`` on a free port: the process,
    its host and port."""
    server = subprocess.Popen([sys.executable, str(folder / "predict.py"), "--serve", "--port",
                               "0", *options], stdout=subprocess.PIPE, text=True)
    try:
        url = json.loads(server.stdout.readline())["serving"]  # type: ignore[union-attr]
        host, port = url.split("//")[1].split("/")[0].split(":")
        yield server, host, int(port)
    finally:
        server.terminate()
        server.wait(timeout=30)


def health_within(host: str, port: int, seconds: float) -> tuple[int, float]:
    """GET /health: its status and how long the answer took."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=seconds) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        status = error.code
    return status, time.monotonic() - start


def answer_of(connection: socket.socket, seconds: float) -> tuple[bytes, float]:
    """Everything the server sends on ``connection`` until it closes it, and when."""
    connection.settimeout(seconds)
    start, received = time.monotonic(), b""
    while chunk := connection.recv(65536):
        received += chunk
    return received, time.monotonic() - start


def holding_the_last_slot(host: str, port: int) -> socket.socket:
    """A connection the server has given a slot to: the one a /health just finished
    with is freed by its thread a moment after the answer, and a connection that came
    before that was answered 503 (tried again, a few times)."""
    for _ in range(20):
        connection = socket.create_connection((host, port))
        connection.settimeout(2.0)  # a 503 is sent at once, but a loaded machine is slow
        try:
            refused = connection.recv(64).startswith(b"HTTP/1.0 503")
        except TimeoutError:
            refused = False  # waiting for its request: it holds a slot
        if not refused:
            return connection
        connection.close()
        time.sleep(0.1)
    raise AssertionError("every connection was answered 503")


def test_a_slow_or_idle_client_blocks_no_one_and_is_cut_at_the_timeout(released: Any) -> None:
    """Issue 25 items 6 and 24: a client announcing 100000 bytes and sending 100, and one
    that sends nothing, hold their connections while /health answers at once; both are
    cut after --timeout; connections beyond --max-connections are answered 503 at once."""
    folder, _ = released
    # Bounds with room for a busy CI machine, yet each well below the --timeout that a
    # server serving one connection at a time would make /health wait for.
    with serving(folder, "--timeout", "6", "--max-connections", "3") as (_, host, port):
        slow = socket.create_connection((host, port))
        sent_at = time.monotonic()
        slow.sendall(b"POST /predict HTTP/1.1\r\nHost: board\r\nContent-Length: 100000\r\n\r\n"
                     + b"x" * 100)
        idle = socket.create_connection((host, port))
        time.sleep(0.3)
        status, took = health_within(host, port, 10)
        assert status == 200 and took < 5.0
        third = holding_the_last_slot(host, port)  # the slots are full now
        status, took = health_within(host, port, 10)
        assert status == 503 and took < 5.0
        third.close()
        said, _ = answer_of(slow, 15)
        assert said.startswith(b"HTTP/1.0 408 ") and 5.5 < time.monotonic() - sent_at < 12
        assert b"did not arrive within 6 s (100 did)" in said
        said, _ = answer_of(idle, 15)
        assert said == b"" and time.monotonic() - sent_at < 12
        time.sleep(0.3)
        assert health_within(host, port, 10)[0] == 200


def rss_mb(pid: int) -> float:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_a_body_is_read_only_up_to_its_announced_bounded_size(released: Any) -> None:
    """Issue 25 item 24: Content-Length -1 followed by 200 MB is refused with 400 without
    reading it (the server grew by 377 MB), a huge one with 413, none with 411."""
    folder, _ = released
    with serving(folder, "--timeout", "5") as (server, host, port):
        before = rss_mb(server.pid)
        flood = socket.create_connection((host, port))
        flood.sendall(b"POST /predict HTTP/1.1\r\nHost: board\r\nContent-Length: -1\r\n\r\n")
        block = b"\0" * (1 << 20)
        try:
            for _ in range(200):
                flood.sendall(block)
        except OSError:  # the server answered and closed: what it did not read is refused
            pass
        grown = rss_mb(server.pid) - before
        flood.close()
        assert grown < 30, f"the server grew by {grown:.0f} MB"
        for length, code, words in (("-1", 400, "whole number of bytes, not '-1'"),
                                    ("1000000000000", 413, "more than the 10485760 allowed"),
                                    (None, 411, "Content-Length header is required")):
            asking = socket.create_connection((host, port))
            header = b"" if length is None else f"Content-Length: {length}\r\n".encode()
            asking.sendall(b"POST /predict HTTP/1.1\r\nHost: board\r\n" + header + b"\r\n")
            said, _ = answer_of(asking, 10)
            asking.close()
            assert said.split(b"\r\n")[0].split()[1] == str(code).encode(), said
            assert words in json.loads(said.split(b"\r\n\r\n", 1)[1])["error"]
        assert health_within(host, port, 10)[0] == 200


def test_a_file_changed_after_the_release_is_refused_by_the_predictor_and_shown_as_drift(
        project: Layout, tiny_project: Any) -> None:
    farm = farm_of(project)
    outcome = release_device(tiny_project.params, farm, project, "local")
    folder = app(project, "local") / "current"
    manifest = json.loads((folder / "manifest.json").read_text())
    artifact = folder / manifest["artifact"]
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"\0")
    predictor = device_code.predictor()
    with pytest.raises(ValueError, match="is not the released file"):
        predictor.Model(str(folder))
    assert device_state(farm, project, "local")["drift"] == (
        f"the files of {outcome.release_id} on the board changed since it was released: "
        f"{manifest['artifact']}")


def with_classes_renamed(text: str) -> str:
    document = json.loads(text)
    document["classes"] = [f"edited-{name}" for name in document["classes"]]
    return json.dumps(document, indent=2)


EDITS = {"predict.py": lambda text: text + "\n# edited on the board\n",
         "edgeflow_device/predict.py": lambda text: text + "\n# edited on the board\n",
         "edgeflow_device/preprocess.py": lambda text: text.replace("/ 255.0", "/ 128.0"),
         "manifest.json": with_classes_renamed,
         "check/0001.png": lambda text: text + " "}


def test_every_file_of_a_release_is_checked_by_the_predictor_and_by_status(
        project: Layout, tiny_project: Any) -> None:
    """Issue 25 item 3: predict.py (the launcher, or the predictor's module), preprocess.py
    (/ 255.0 -> / 128.0) or the manifest's
    class names edited in ``current``: the predictor refuses to start and status shows
    drift naming the file; a manifest rewritten with its digest file is drift too."""
    farm = farm_of(project)
    outcome = release_device(tiny_project.params, farm, project, "local")
    folder = app(project, "local") / "current"
    image = str(folder / "check" / "0000.png")
    predictor = device_code.predictor()
    for name, edit in EDITS.items():
        path = folder / name
        released = path.read_bytes()
        path.write_bytes(edit(released.decode("latin-1")).encode("latin-1"))
        assert path.read_bytes() != released, name
        with pytest.raises(ValueError, match=f"^{name} in .* is not the released file"):
            predictor.Model(str(folder))
        done = subprocess.run([sys.executable, str(folder / "predict.py"), image],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2 and done.stdout == "", name
        assert "is not the released file" in done.stderr and "Traceback" not in done.stderr
        assert device_state(farm, project, "local")["drift"] == (
            f"the files of {outcome.release_id} on the board changed since it was released: "
            f"{name}")
        path.write_bytes(released)
        assert device_state(farm, project, "local")["drift"] is None
    manifest = folder / "manifest.json"
    manifest.write_text(with_classes_renamed(manifest.read_text()))
    digest = subprocess.run(["sha256sum", "manifest.json"], cwd=folder, capture_output=True,
                            text=True, check=True).stdout
    (folder / "manifest.sha256").write_text(digest)
    assert predictor.Model(str(folder)).classes[0].startswith("edited-")  # the board cannot tell
    assert device_state(farm, project, "local")["drift"] == (
        f"the manifest of {outcome.release_id} on the board changed since it was released "
        "(manifest.json rewritten with its digest file)")
    # Releasing the same variant again is no "unchanged" that would adopt the edited
    # manifest into edgeflow's record: the release is pushed again.
    again = release_device(tiny_project.params, farm, project, "local")
    assert again.status == "released" and again.release_id != outcome.release_id
    assert again.message.endswith("(replacing a release whose files had changed on the board)")
    assert predictor.Model(str(folder)).classes == json.loads(
        (project.prepared / "meta.json").read_text())["classes"]
    assert device_state(farm, project, "local")["drift"] is None


def test_an_alias_the_tracking_server_cannot_move_is_said_not_raised(project: Layout) -> None:
    """The board has switched when the alias moves: a server gone since the release
    started must not keep edgeflow's record from saying so."""
    import socket

    from tasks.release import _alias_moved

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{probe.getsockname()[1]}"
    said = _alias_moved({"tracking_uri": uri, "registered_model": "edgeflow-x", "version": "3"},
                        "pi")
    assert said.startswith(f"; the MLflow alias device-pi was not moved: MLFLOW_TRACKING_URI "
                           f"{uri}: no MLflow server answers there")
    assert _alias_moved(None, "pi") == ""  # nothing registered: nothing to move


def test_a_deleted_file_or_digest_is_refused_and_drift_names_at_most_five_files(
        project: Layout, tiny_project: Any) -> None:
    """A check image deleted in ``current``: the predictor refuses the incomplete release
    and status names the file; ``manifest.sha256`` deleted: drift names it; seven files
    changed: drift names the first five and counts the rest."""
    farm = farm_of(project)
    outcome = release_device(tiny_project.params, farm, project, "local")
    folder = app(project, "local") / "current"
    prefix = f"the files of {outcome.release_id} on the board changed since it was released: "
    predictor = device_code.predictor()
    image = folder / "check" / "0002.png"
    kept = image.read_bytes()
    image.unlink()
    with pytest.raises(ValueError, match=r"^check/0002.png in .* is missing \(the release is "
                                         r"incomplete\)$"):
        predictor.Model(str(folder))
    assert device_state(farm, project, "local")["drift"] == prefix + "check/0002.png"
    image.write_bytes(kept)

    digest = folder / "manifest.sha256"
    kept = digest.read_bytes()
    digest.unlink()
    with pytest.raises(ValueError, match=r"^manifest.json in .* is not the released file"):
        predictor.Model(str(folder))
    assert device_state(farm, project, "local")["drift"] == prefix + "manifest.sha256"
    digest.write_bytes(kept)
    assert device_state(farm, project, "local")["drift"] is None

    names = [f"check/{index:04d}.png" for index in range(7)]
    for name in names:
        with (folder / name).open("ab") as handle:
            handle.write(b" ")
    assert device_state(farm, project, "local")["drift"] == (
        prefix + ", ".join(names[:5]) + " and 2 more")


def test_a_letterboxed_project_releases_a_letterboxing_predictor(
        project: Layout, tiny_project: Any) -> None:
    """``data.fit: letterbox``: the manifest says so and the predictor pads an image of
    another aspect ratio with black, as prepare did the training images."""
    from PIL import Image

    meta_path = project.prepared / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["fit"] = "letterbox"
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    outcome = release_device(tiny_project.params, farm_of(project), project, "local")
    assert outcome.status == "released", outcome.message
    folder = app(project, "local") / "current"
    model = device_code.predictor().Model(str(folder))
    assert (model.manifest["input"]["fit"], model.fit) == ("letterbox", "letterbox")
    white = np.full((10, 40, 3), 255, np.uint8)  # 40 wide, 10 high
    prepared = model.prepare(white)
    preprocess = device_code.preprocess()
    expected = preprocess.to_model_input(Image.fromarray(white), model.height, model.width,
                                         model.color, "letterbox")
    np.testing.assert_array_equal(prepared, expected)
    assert prepared[0].max() == 0.0 and prepared[-1].max() == 0.0  # black bands
    assert prepared[model.height // 2].min() == 1.0  # the image, whole across


@pytest.mark.parametrize("option", ["--timeout", "--max-connections", "--max-bytes"])
def test_the_predictor_refuses_a_limit_of_zero(option: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        device_code.predictor().main(["--serve", option, "0"])
    assert refused.value.code == 2
    assert f"argument {option}: must be more than 0, not 0" in capsys.readouterr().err


def test_devices_registering_at_once_share_one_registered_model_and_version(
        project: Layout) -> None:
    """The flow releases to every device in parallel threads: one registered model, and
    one version for one model, whoever registers first."""
    import threading

    from tasks.release import registry

    variant = json.loads(project.summary.read_text())["recommendations"]["local"]
    found: list[Any] = []
    threads = [threading.Thread(target=lambda device=device: found.append(
        registry.register(project, variant, device))) for device in ("local", "other", "slow")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 3 and {entry["version"] for entry in found} == {"1"}
    assert {entry["registered_model"] for entry in found} == {registered_model_name(project)}


def test_a_microcontroller_gets_a_firmware_bundle_with_its_sources_labels_and_arena(
        tiny_project: Any, tmp_path: Path) -> None:
    """A tflm variant converted for real: the bundle holds what the README says, and the
    same variant again writes nothing new; another format is refused."""
    from tasks.convert import ConvertInputs, convert
    from tasks.config import ConvertParams, QuantizationParams
    from tasks.core.contracts.variants import read_variant_index
    from tasks.targets.mcu import labels_header

    source, layout = tiny_project.layout, Layout(tmp_path / "project")
    shutil.copytree(source.prepared, layout.prepared)
    convert({"tflm": ["int8"], "tflite": ["fp32"]}, ConvertParams(check_samples=40),
            QuantizationParams(calibration_samples=50), 0.5,
            ConvertInputs(source.base_model, None, layout.prepared), layout.variants)
    (layout.root / "farm.yaml").write_text(
        "devices:\n  esp32: {transport: mcu, flash_kb: 8192, ram_kb: 512}\n", encoding="utf-8")
    farm = load_farm(layout.root / "farm.yaml")
    summary = {"reference_accuracy": 0.9, "rank_by": "latency_p50_ms", "requirements": {},
               "counts": {"pass": 1, "fail": 0, "error": 0, "skipped": 0},
               "recommendations": {"esp32": "tflm-int8"}, "results": []}
    layout.reports.mkdir(parents=True)
    layout.summary.write_text(json.dumps(summary))
    # Class names as a user's folders may have them: the bundle must still compile.
    meta = json.loads((layout.prepared / "meta.json").read_text(encoding="utf-8"))
    meta["classes"] = [f"{name}{suffix}" for name, suffix in
                       zip(meta["classes"], ["Über", "éclair", ' "q" ', "\\", "??=", "日本"] * 9)]
    (layout.prepared / "meta.json").write_text(json.dumps(meta), encoding="utf-8")

    outcome = release_device(tiny_project.params, farm, layout, "esp32")
    assert outcome.status == "released", outcome.message
    bundle = layout.device_releases("esp32") / str(outcome.release_id)
    assert sorted(path.name for path in bundle.iterdir()) == [
        "labels.h", "manifest.json", "model.tflite", "model_data.cc", "model_data.h"]
    assert compiled_labels(bundle, meta["classes"], tmp_path / "compiled") == [
        name.encode() for name in meta["classes"]]
    variant = next(v for v in read_variant_index(layout.variants).variants if v.name == "tflm-int8")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["arena_bytes"] == variant.spec["arena_bytes"] > 0
    assert manifest["sha256"] == variant.sha256 and manifest["budget"]["ram_kb"] == 512
    classes = json.loads((layout.prepared / "meta.json").read_text())["classes"]
    assert (bundle / "labels.h").read_text() == labels_header(classes)
    assert f"constexpr int kLabelCount = {len(classes)};" in labels_header(classes)
    assert "kTensorArenaSize" in (bundle / "model_data.h").read_text() + \
        (bundle / "model_data.cc").read_text()
    assert read_record(layout, "esp32")["current"]["release"] == outcome.release_id

    again = release_device(tiny_project.params, farm, layout, "esp32")
    assert again.status == "unchanged" and len(list(layout.device_releases("esp32").iterdir())) == 2
    refused = release_device(tiny_project.params, farm, layout, "esp32", variant="tflite-fp32",
                             approve=YES)
    assert refused.status == "refused" and "only tflm variants run there" in refused.message


def test_a_microcontroller_proposes_nothing_before_its_variant_is_looked_up(
        tmp_path: Path) -> None:
    """A kind that keeps no release state of its own proposes nothing, whatever the
    variant index says of its recommendation (a missing one raises only in the release)."""
    from tasks.config import load_params
    from tasks.core.contracts.variants import VariantIndex, write_variant_index
    from tasks.release import proposal
    from tests.tiny import TINY_PARAMS, write_tiny_config

    write_tiny_config(tmp_path, TINY_PARAMS,
                      "devices:\n  esp32: {transport: mcu, flash_kb: 8192, ram_kb: 512}\n")
    layout = Layout(tmp_path)
    write_variant_index(layout.variants, VariantIndex(reference_accuracy=0.9, sources={},
                                                      variants=[]))
    layout.reports.mkdir(parents=True)
    layout.summary.write_text(json.dumps({
        "reference_accuracy": 0.9, "rank_by": "latency_p50_ms", "requirements": {},
        "counts": {"pass": 1, "fail": 0, "error": 0, "skipped": 0},
        "recommendations": {"esp32": "tflm-int8"}, "results": []}))
    params, farm = load_params(tmp_path / "params.yaml"), load_farm(tmp_path / "farm.yaml")
    assert params.release.policy == "auto"
    assert proposal(params, farm, layout, "esp32") is None


def _variants(layout: Layout) -> list[str]:
    return [entry["name"] for entry in json.loads(layout.variants_index.read_text())["variants"]
            if entry["status"] == "ok" and entry["runtime"] in ("tflite", "onnxruntime")]


def _farm_with(layout: Layout, device: str, entry: str) -> Any:
    """The project's farm plus one more local device (released to by hand only)."""
    path = layout.root / f"farm-{device}.yaml"
    path.write_text(FARM + f"  {device}: {entry}\n", encoding="utf-8")
    return load_farm(path)


def test_an_unchanged_release_repairs_the_record_and_the_alias_the_board_disagrees_with(
        project: Layout, tiny_project: Any) -> None:
    """The board switched behind edgeflow's back (its manager run there by another
    machine, or a release interrupted after its switch): releasing what it runs is
    unchanged, and edgeflow's record and the MLflow alias are made to say so."""
    params, farm = tiny_project.params, farm_of(project)
    first, second = _variants(project)[:2]
    one = release_device(params, farm, project, "local", variant=first, approve=YES)
    two = release_device(params, farm, project, "local", variant=second, approve=YES)
    assert two.status == "released" and alias_version(project, "local") == two.mlflow_version
    folder = app(project, "local")
    subprocess.run([sys.executable, str(folder / "releases.py"), "rollback", "--app", str(folder)],
                   check=True, capture_output=True)
    assert current(project, "local") == f"releases/{one.release_id}"
    assert device_state(farm, project, "local")["drift"] == (
        f"the board runs {one.release_id}, edgeflow recorded {two.release_id}")

    again = release_device(params, farm, project, "local", variant=first, approve=YES)
    assert (again.status, again.release_id, again.mlflow_version) == (
        "unchanged", one.release_id, one.mlflow_version)
    assert again.message == (
        f"local already runs {first}; repaired edgeflow's record (it said {two.release_id}) "
        f"and the MLflow alias device-local (it pointed at version {two.mlflow_version})")
    assert alias_version(project, "local") == one.mlflow_version
    assert read_record(project, "local")["current"]["release"] == one.release_id
    assert device_state(farm, project, "local")["drift"] is None

    # The alias alone moved: status says so, and the next release puts it back.
    from mlflow import MlflowClient

    uri = f"sqlite:///{(project.root / 'mlflow' / 'mlflow.db').resolve()}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        registered_model_name(project), alias("local"), str(two.mlflow_version))
    assert device_state(farm, project, "local")["drift"] == (
        f"the MLflow alias device-local points at version {two.mlflow_version}, the board runs "
        f"version {one.mlflow_version}")
    fixed = release_device(params, farm, project, "local", variant=first, approve=YES)
    assert fixed.message == (f"local already runs {first}; repaired the MLflow alias "
                             f"device-local (it pointed at version {two.mlflow_version})")
    assert alias_version(project, "local") == one.mlflow_version
    assert release_device(params, farm, project, "local", variant=first,
                          approve=YES).message == f"local already runs {first}"


def test_on_release_failing_on_the_restored_release_too_is_reported_as_a_failure(
        project: Layout, tiny_project: Any) -> None:
    params = tiny_project.params
    farm = _farm_with(project, "flaky", "{threads: 1, workdir: .edgeflow/devices/flaky, "
                      "on_release: 'if test -e \"$1/../../broken\"; then echo service down >&2; "
                      "exit 5; fi'}")
    first, second = _variants(project)[:2]
    one = release_device(params, farm, project, "flaky", variant=first, approve=YES)
    assert one.status == "released", one.message
    (app(project, "flaky") / "broken").touch()  # the application no longer starts at all

    two = release_device(params, farm, project, "flaky", variant=second, approve=YES)
    assert two.status == "failed"
    assert two.message == (
        "on_release failed (exit 5: service down); switched back to "
        f"{one.release_id}, but on_release failed there too (exit 5: service down): the "
        "application is not running")
    assert current(project, "flaky") == f"releases/{one.release_id}"


def test_a_hung_on_release_is_stopped_with_every_process_it_started(
        project: Layout, tiny_project: Any) -> None:
    from tests.helpers import processes_left

    farm = _farm_with(project, "hung", "{threads: 1, workdir: .edgeflow/devices/hung, "
                      "on_release_timeout_seconds: 1, on_release: 'sleep 171717 & sleep 171718'}")
    outcome = release_device(tiny_project.params, farm, project, "hung",
                             variant=_variants(project)[0], approve=YES)
    assert processes_left("sleep 17171", within=3.0) == []
    assert outcome.status == "refused"
    assert outcome.message == (
        "hung keeps its release: on_release failed (did not finish within 1 s (it was "
        "stopped, with every process it started)); no release to restore")
    assert current(project, "hung") is None


def test_a_release_whose_files_changed_on_the_board_is_pushed_again_not_unchanged(
        project: Layout, tiny_project: Any) -> None:
    params, farm = tiny_project.params, farm_of(project)
    first = release_device(params, farm, project, "local")
    folder = app(project, "local") / "current"
    manifest = json.loads((folder / "manifest.json").read_text())
    artifact = folder / manifest["artifact"]
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"\0")

    again = release_device(params, farm, project, "local")
    assert (again.status, again.variant) == ("released", first.variant)
    assert again.release_id != first.release_id
    assert again.message == (f"{again.release_id} is current (was {first.release_id}) "
                             "(replacing a release whose files had changed on the board)")
    assert current(project, "local") == f"releases/{again.release_id}"
    model = device_code.predictor().Model(str(app(project, "local") / "current"))
    assert model.manifest["variant"] == first.variant
    assert device_state(farm, project, "local")["drift"] is None
    # The damaged release is no rollback target: the predictor would refuse its files.
    rolled = rollback_device(farm, project, "local")
    assert rolled.status == "refused" and "no earlier healthy release" in rolled.message
    assert current(project, "local") == f"releases/{again.release_id}"
    assert release_device(params, farm, project, "local").status == "unchanged"


def test_a_stop_while_a_local_release_waits_for_the_device_lock_leaves_current(
        project: Layout, tiny_project: Any) -> None:
    """Ctrl-C's path on the local device (the transport keeps waiting; the stopper stops
    the activation on the device): Interrupted within seconds, nothing switched."""
    import fcntl

    from tasks.core import interrupt
    from tasks.farm.protocol import LOCK_NAME
    from tests.helpers import processes_left, processes_mentioning, stop_when

    params, farm = tiny_project.params, farm_of(project)
    first, second = _variants(project)[:2]
    one = release_device(params, farm, project, "local", variant=first, approve=YES)
    manager = str(app(project, "local") / "releases.py")
    with open(app(project, "local").parent / LOCK_NAME, "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # a benchmark holds the device
        raised, seconds = stop_when(
            lambda: release_device(params, farm, project, "local", variant=second, approve=YES),
            lambda: any(line.startswith("flock ") and " activate " in line
                        for line in processes_mentioning(manager)),
            "an activation waiting for the lock")
        assert isinstance(raised, interrupt.Interrupted) and seconds < 10
        assert processes_left(manager) == []
    assert current(project, "local") == f"releases/{one.release_id}"
    # The folder pushed for the stopped release is not left on the device.
    assert os.listdir(app(project, "local") / "releases") == [one.release_id]
    assert read_record(project, "local")["current"]["release"] == one.release_id
    assert alias_version(project, "local") == one.mlflow_version


# Strict enough that an out-of-range escape, a trigraph or a narrowing is an error.
CXX_FLAGS = ["-Wall", "-Wextra", "-Werror", "-pedantic"]
PRINT_LABELS = """\
#include <cstdio>
#include "labels.h"
#include "model_data.h"
int main() {
  for (int i = 0; i < kLabelCount; ++i) {
    for (const char* c = kLabels[i]; *c; ++c) std::printf("%02x", static_cast<unsigned char>(*c));
    std::printf("\\n");
  }
  return kTensorArenaSize > 0 ? 0 : 1;
}
"""
BOARD_UNIT = """\
#include "labels.h"
#include "model_data.h"
const char* label(int index) { return index < kLabelCount ? kLabels[index] : nullptr; }
"""


def compiled_labels(bundle: Path, classes: list[str], work: Path) -> list[bytes]:
    """Compile the bundle's sources with its headers (in ``work``) for the board (Debian's
    arm-none-eabi-g++, Cortex-M4, where installed) and for this machine under C++11
    (trigraphs on) and C++17; run the host program, which prints each label's bytes."""
    work.mkdir()
    (work / "main.cc").write_text(PRINT_LABELS, encoding="utf-8")
    (work / "board.cc").write_text(BOARD_UNIT, encoding="utf-8")
    sources = [str(work / "main.cc"), str(bundle / "model_data.cc")]
    if shutil.which("arm-none-eabi-g++"):  # bare metal: no <cstdio>, so no main.cc
        for source in (work / "board.cc", bundle / "model_data.cc"):
            built = subprocess.run(["arm-none-eabi-g++", "-mcpu=cortex-m4", "-mthumb",
                                    "-std=c++17", *CXX_FLAGS, f"-I{bundle}", "-c", str(source),
                                    "-o", str(work / f"{source.stem}.o")],
                                   capture_output=True, text=True)
            assert built.returncode == 0, built.stderr
    printed = []
    for standard in ("c++11", "c++17"):
        program = work / f"labels-{standard}"
        built = subprocess.run(["g++", f"-std={standard}", *CXX_FLAGS, f"-I{bundle}", *sources,
                                "-o", str(program)], capture_output=True, text=True)
        assert built.returncode == 0, built.stderr
        printed.append(subprocess.run([str(program)], check=True, capture_output=True,
                                      text=True).stdout.splitlines())
    assert printed[0] == printed[1] and len(printed[0]) == len(classes)
    return [bytes.fromhex(line) for line in printed[0]]


def test_labels_header_holds_every_class_name_as_its_utf8_bytes(tmp_path: Path) -> None:
    """Non-ASCII, quotes, backslashes, trigraph look-alikes and control characters:
    each name compiles (-Werror -pedantic) to exactly its UTF-8 bytes."""
    from tasks.targets.mcu import labels_header

    classes = ["Über", "éclair", "naïve café", 'say "hi"', "back\\slash", "why??=", "tab\there",
               "日本語", "emoji 🙂", "\x7fdel", "a1b2"]
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "labels.h").write_text(labels_header(classes), encoding="utf-8")
    (bundle / "model_data.h").write_text("#pragma once\nconstexpr int kTensorArenaSize = 1;\n",
                                         encoding="utf-8")
    (bundle / "model_data.cc").write_text('#include "model_data.h"\n', encoding="utf-8")
    assert compiled_labels(bundle, classes, tmp_path / "compiled") == [
        name.encode("utf-8") for name in classes]
    assert labels_header(["Über"]).count("\\303\\234ber") == 1  # readable ASCII stays
    # Printable ASCII is kept as it is, from space (0x20) to '~' (0x7e); DEL (0x7f) and
    # control bytes are octal escapes; quote, backslash and '?' (trigraphs) are escaped.
    assert labels_header([" ~\x7f\t\"\\?"]).count('" ~\\177\\011\\"\\\\\\?"') == 1



def test_a_tracking_server_that_does_not_answer_stops_the_release_at_once(
        project: Layout, tiny_project: Any) -> None:
    """The run was tracked on a server that is down now: registering would retry for
    minutes; the release stops in one line naming it, before the board is touched."""
    import socket
    import time

    from tasks.core.errors import ConfigError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{probe.getsockname()[1]}"  # nothing listens once closed
    record = project.root / "metrics" / "mlflow_run.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "tracking_uri": uri}))
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"^MLFLOW_TRACKING_URI {uri}: no MLflow server "
                                          r"answers there \(\[Errno 111\]"):
        release_device(tiny_project.params, farm_of(project), project, "local")
    assert time.monotonic() - started < 30
    assert current(project, "local") is None


def test_an_application_the_hook_starts_in_the_background_keeps_running(
        project: Layout, tiny_project: Any) -> None:
    """``on_release: 'app &'``: the hook is over when its shell exits; the application,
    which inherits the hook's output, is neither waited for nor killed at the timeout."""
    from tests.helpers import processes_left

    farm = _farm_with(project, "bg", "{threads: 1, workdir: .edgeflow/devices/bg, "
                      "on_release_timeout_seconds: 2, on_release: 'echo starting; "
                      "sleep 181818 & echo started'}")
    try:
        outcome = release_device(tiny_project.params, farm, project, "bg",
                                 variant=_variants(project)[0], approve=YES)
        assert outcome.status == "released", outcome.message
        assert outcome.message.endswith("is current")
        assert len(processes_left("sleep 181818", within=3.0)) == 1  # still running
    finally:
        subprocess.run(["pkill", "-f", "sleep 181818"], check=False)


def test_a_stop_once_the_switch_is_under_way_records_and_says_the_release(
        project: Layout, tiny_project: Any) -> None:
    """Ctrl-C while on_release runs (after the switch): the release finishes, the board,
    the record and the alias agree on it, its outcome is said, and then the run stops."""
    from tasks.core import interrupt, notices
    from tests.helpers import stop_when

    marker = project.root / "hook-started"
    farm = _farm_with(project, "late", "{threads: 1, workdir: .edgeflow/devices/late, "
                      f"on_release: 'touch {marker}; sleep 2'}}")
    variant = _variants(project)[0]
    seen: list[str] = []
    with notices.listening(lambda notice: seen.append(getattr(notice, "message", ""))):
        raised, _ = stop_when(
            lambda: release_device(tiny_project.params, farm, project, "late", variant=variant,
                                   approve=YES),
            marker.exists, "the on_release hook running")
    assert isinstance(raised, interrupt.Interrupted)
    record = read_record(project, "late")
    released = record["current"]["release"]
    assert current(project, "late") == f"releases/{released}"
    assert alias_version(project, "late") == str(record["current"]["mlflow"]["version"])
    assert [line for line in seen if line.startswith("release: late: released: ")] == [
        f"release: late: released: {released} is current (MLflow version "
        f"{record['current']['mlflow']['version']}) (its switch was under way when the stop "
        "came)"]


@pytest.mark.parametrize("requirements, floor", [
    ({"min_accuracy": 0.85, "max_accuracy_drop": 0.1}, 0.85),  # min_accuracy binds (> 0.81)
    ({"min_accuracy": 0.7, "max_accuracy_drop": 0.1}, 0.81),   # the drop binds (> 0.7)
    ({"max_accuracy_drop": 0.05}, 0.855),  # relative to the reference 0.9, not 0.9 - 0.05
    ({"min_accuracy": 0.7}, 0.7),
    ({"min_accuracy": 0.0}, 0.0),  # a floor of zero is a floor, not none
    ({"max_accuracy_drop": 0.0}, 0.9),  # no drop allowed: the reference itself
    ({"max_latency_p90_ms": 5.0}, None),  # no accuracy requirement: no floor
])
def test_the_check_floor_is_the_higher_of_min_accuracy_and_the_allowed_drop(
        requirements: dict, floor: float | None) -> None:
    """The health check's floor (the release manifest's ``check.accuracy_floor``): of
    ``min_accuracy`` and the reference less ``max_accuracy_drop`` (relative), whichever is
    higher, each binding in turn; only the device's own requirements count."""
    from tasks.core.contracts.summary import Summary
    from tasks.release.bundle import accuracy_floor

    summary = Summary.model_construct(reference_accuracy=0.9, requirements={
        "board": requirements, "other": {"min_accuracy": 0.99, "max_accuracy_drop": 0.0}})
    assert accuracy_floor(summary, "board") == (pytest.approx(floor, abs=1e-12)
                                                if floor is not None else None)
    assert accuracy_floor(summary, "unknown") is None


def test_an_emulated_board_select_left_out_gets_nothing_released_said_in_one_line(
        tmp_path: Path) -> None:
    """Issue 28: the release follows the recommendation; an emulated board without one
    (select.include_emulated off) gets nothing, and the outcome says why and how to opt
    in, as a physical board where nothing passed says that."""
    from tasks.config import load_params
    from tests.tiny import TINY_PARAMS, write_tiny_config

    write_tiny_config(tmp_path, TINY_PARAMS, "devices:\n  local: {threads: 1}\n"
                      "  pi5-emu: {workdir: emu, emulation: qemu-user}\n")
    layout = Layout(tmp_path)
    why = ("emulated (qemu-user): not recommended; set select.include_emulated to recommend "
           "on it")
    layout.reports.mkdir(parents=True)
    layout.summary.write_text(json.dumps({
        "reference_accuracy": 0.9, "rank_by": "latency_p50_ms", "requirements": {},
        "counts": {"pass": 1, "fail": 1, "error": 0, "skipped": 0},
        "recommendations": {"local": None, "pi5-emu": None},
        "excluded": {"pi5-emu": why}, "results": []}))
    params, farm = load_params(tmp_path / "params.yaml"), load_farm(tmp_path / "farm.yaml")
    emulated = release_device(params, farm, layout, "pi5-emu")
    assert (emulated.status, emulated.variant) == ("skipped", None)
    assert emulated.message == f"nothing released to pi5-emu: {why}"
    physical = release_device(params, farm, layout, "local")
    assert physical.message == "no variant passed the requirements on local"
    assert not (tmp_path / "emu").exists()  # the board was never touched


# ------------------------------------------------- rollback and drift on a board, no project
# The board's real manager (a local device whose releases are folders, their checks a
# stand-in, see tests/tasks/device/test_releases.py), the record edgeflow keeps of it.


def test_rollbacks_and_a_hand_moved_current_are_recorded_as_the_board_says(
        tmp_path: Path) -> None:
    from tasks.core.contracts.release import ReleaseDecision, ReleaseOutcome, write_record
    from tests.tasks.device.test_releases import manager_module, many_ids, pushed

    workdir = tmp_path / "board"
    board, python = workdir / "app", tmp_path / "check-python"
    python.write_text('#!/bin/sh\ncat "$(dirname "$1")/verdict.json"\n')
    python.chmod(0o700)
    manager, ids = manager_module(), many_ids(4)
    layout = Layout(tmp_path / "project")
    for name in ids:
        pushed(board, name)
        assert manager.activate(str(board), name, str(python), None, 5, 30, 30)["status"] == \
            "released"
    shutil.copy(device_code.RELEASES_PATH, board / "releases.py")
    (tmp_path / "farm.yaml").write_text(f"devices:\n  pi: {{workdir: '{workdir}'}}\n")
    farm = load_farm(tmp_path / "farm.yaml")
    # What edgeflow recorded of the last release (the release step writes it so).
    status = manager.status(str(board))
    write_record(layout, ReleaseDecision(ReleaseOutcome("pi", RELEASED, "onnx-fp32", ids[3],
                                                        "ok"), status["current"],
                                         status["previous"]))
    assert device_state(farm, layout, "pi")["drift"] is None

    back = rollback_device(farm, layout, "pi", readable_by="owner")
    assert (back.status, back.release_id, back.variant) == (ROLLED_BACK, ids[2], "onnx-fp32")
    assert back.message == f"{ids[2]} is current again (was {ids[3]})"
    record = read_record(layout, "pi")
    assert (record["current"]["release"], record["previous"]["release"]) == (ids[2], ids[1])
    assert device_state(farm, layout, "pi")["drift"] is None

    # A rollback whose on_release fails there is undone: refused, the record unchanged.
    hook = f'test "$EDGEFLOW_RELEASE" != {ids[1]} || {{ echo down; exit 5; }}'
    (tmp_path / "hooked.yaml").write_text(
        f"devices:\n  pi: {{workdir: '{workdir}', on_release: '{hook}'}}\n")
    undone = rollback_device(load_farm(tmp_path / "hooked.yaml"), layout, "pi")
    assert (undone.status, undone.release_id) == (REFUSED, ids[2])
    assert undone.message == (f"pi was not rolled back: on_release failed (exit 5: down); "
                              f"switched back to {ids[2]}")
    assert read_record(layout, "pi")["current"] == record["current"]
    assert os.readlink(board / "current") == f"releases/{ids[2]}"

    # current moved on the board by hand: drift names both, and the next rollback starts
    # from the board's current (the link), not from the one recorded.
    os.symlink(f"releases/{ids[1]}", board / "moved")
    os.replace(board / "moved", board / "current")
    assert device_state(farm, layout, "pi")["drift"] == (
        f"the board runs {ids[1]}, edgeflow recorded {ids[2]}")
    back = rollback_device(farm, layout, "pi")
    assert (back.status, back.release_id) == (ROLLED_BACK, ids[0])
    assert back.message == f"{ids[0]} is current again (was {ids[1]})"
    record = read_record(layout, "pi")
    assert (record["current"]["release"], record["previous"]) == (ids[0], None)
    assert device_state(farm, layout, "pi")["drift"] is None

    # Nothing older: refused, and the record's current and previous stay as they were.
    refused = rollback_device(farm, layout, "pi")
    assert (refused.status, refused.release_id, refused.variant) == (REFUSED, ids[0], None)
    assert refused.message == ("pi was not rolled back: no earlier healthy release on the "
                               "device")
    after = read_record(layout, "pi")
    assert (after["current"], after["previous"]) == (record["current"], None)
    assert [attempt["status"] for attempt in after["attempts"]] == [
        "released", "rolled back", "refused", "rolled back", "refused"]
    assert os.readlink(board / "current") == f"releases/{ids[0]}"
