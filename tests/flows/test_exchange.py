"""Files between machines through a DVC remote (flows/exchange.py): two DVC projects (the
orchestrator's clone and a worker's) whose default remote is the same folder; what one
sends the other receives byte for byte, in place of what was there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows.exchange import ExchangeFailed, receive, send
from tasks.core.files import sha256_file, sha256_tree

DVC = str(Path(sys.executable).parent / "dvc")


def dvc_project(folder: Path, remote: Path | None) -> Path:
    """A DVC project without git in ``folder``, its default remote the folder ``remote``
    (none: no remote at all)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=folder, check=True)
    if remote is not None:
        subprocess.run([DVC, "remote", "add", "-d", "team", str(remote)], cwd=folder, check=True)
    return folder


def _remote_files(remote: Path) -> set[Path]:
    """The remote's objects (not the hidden files DVC writes to probe it is writable)."""
    return {path for path in remote.rglob("*") if path.is_file() and not path.name.startswith(".")}


def test_what_one_project_sends_the_other_receives_byte_for_byte_replacing_what_was_there(
        tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    sender, receiver = (dvc_project(tmp_path / name, remote) for name in ("sender", "receiver"))
    folder = sender / "exp" / "models" / "base"
    (folder / "inner").mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"weights" * 100)
    (folder / "inner" / "reference.json").write_text('{"accuracy": 0.9}')
    model = sender / "best.onnx"
    model.write_bytes(b"onnx")
    sent = send(sender, {"models/base": folder, "model": model, "absent": sender / "none"})
    assert sent.remote == f"DVC remote team ({remote})"
    assert set(sent.pointers) == {"models/base", "model"}  # nothing sent for a missing path
    assert sent.pointers["models/base"]["md5"].endswith(".dir")
    assert (sent.pointers["models/base"]["nfiles"], sent.pointers["models/base"]["size"]) == (
        2, 700 + len('{"accuracy": 0.9}'))
    assert sent.pointers["model"]["size"] == 4 and "nfiles" not in sent.pointers["model"]
    assert not (sender / ".dvc" / "cache").exists()  # straight to the remote

    stale = receiver / "exp" / "models" / "base"
    stale.mkdir(parents=True)
    (stale / "old.bin").write_bytes(b"from an earlier run")
    destinations = {"models/base": stale, "model": receiver / "inputs" / "best.onnx"}
    receive(receiver, sent.pointers, destinations)
    assert sorted(path.relative_to(stale).as_posix() for path in stale.rglob("*")) == [
        "inner", "inner/reference.json", "model.keras"]
    assert sha256_tree(stale) == sha256_tree(folder)
    assert sha256_file(receiver / "inputs" / "best.onnx") == sha256_file(model)

    # What the remote holds already is not sent again.
    before = {path: path.stat().st_mtime_ns for path in _remote_files(remote)}
    again = send(sender, {"models/base": folder})
    assert again.pointers["models/base"] == sent.pointers["models/base"]
    assert {path: path.stat().st_mtime_ns for path in _remote_files(remote)} == before


def test_a_remote_that_lacks_the_files_is_named_in_one_line_and_nothing_is_replaced(
        tmp_path: Path) -> None:
    sender = dvc_project(tmp_path / "sender", tmp_path / "remote-a")
    receiver = dvc_project(tmp_path / "receiver", tmp_path / "remote-b")
    (sender / "data.npz").write_bytes(b"x" * 10)
    sent = send(sender, {"data": sender / "data.npz"})
    kept = receiver / "data.npz"
    kept.write_bytes(b"kept")
    with pytest.raises(ExchangeFailed) as failure:
        receive(receiver, sent.pointers, {"data": kept})
    message = str(failure.value)
    assert message.startswith(f"receiving data through DVC remote team ({tmp_path / 'remote-b'}): ")
    assert "\n" not in message and "Traceback" not in message
    assert kept.read_bytes() == b"kept"


def test_a_project_without_a_default_remote_is_refused_with_what_to_do(tmp_path: Path) -> None:
    project = dvc_project(tmp_path / "project", None)
    (project / "x").write_text("x")
    with pytest.raises(ExchangeFailed, match=r"^sending x through the default DVC remote of "
                                             r".*: no default DVC remote \(`edgeflow remote "
                                             r"setup URL`\)$"):
        send(project, {"x": project / "x"})
    assert send(project, {"gone": project / "gone"}).pointers == {}  # nothing to send


def test_a_store_that_refuses_is_one_line_naming_the_remote_without_its_password(
        tmp_path: Path) -> None:
    """The store's own error (no DVC error: a refused connection), with the remote named
    as the config has it minus ``user:password@``."""
    from tests.sshd import free_port

    project = dvc_project(tmp_path / "project", None)
    port = free_port()  # nothing listens there
    subprocess.run([DVC, "remote", "add", "-d", "team", f"ssh://alice:s3cret@127.0.0.1:{port}/dvc"],
                   cwd=project, check=True)
    (project / "x").write_text("x")
    with pytest.raises(ExchangeFailed) as failure:
        send(project, {"x": project / "x"})
    message = str(failure.value)
    assert message.startswith(f"sending x through DVC remote team (ssh://127.0.0.1:{port}/dvc): "
                              "ConnectionRefusedError: ")
    assert "s3cret" not in message and "alice" not in message and "\n" not in message
