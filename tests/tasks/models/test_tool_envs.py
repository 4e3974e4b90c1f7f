"""A converter's own pinned environment: the interpreter found (named, on PATH, pyenv's
newest patch), its absence said in one line, the venv created once from the lock with
``--no-deps`` under a key of the lock and the interpreter, rebuilt when half-built,
refused with pip's reason when the lock cannot be installed, and the tool run with its
own bin first on PATH and none of this process's Python paths."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.models import tool_envs
from tasks.models.tool_envs import ToolLock, ToolUnavailable, environment, find_python

HERE = "%d.%d" % sys.version_info[:2]
HERE_FULL = "%d.%d.%d" % sys.version_info[:3]


def fake_python(path: Path, version: str) -> Path:
    """An executable that answers the version probe with ``version``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {version}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def write_lock(path: Path, python: str = HERE, packages: str = "") -> Path:
    path.write_text(f"# a tool's lock\n# python: {python}\n{packages}", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def no_named_python(monkeypatch: pytest.MonkeyPatch) -> None:
    for version in ("3.12", HERE, "3.99"):
        monkeypatch.delenv(tool_envs.python_env_name(version), raising=False)


def test_a_lock_names_its_python_and_its_key_follows_its_text_and_the_interpreter(
        tmp_path: Path) -> None:
    lock = ToolLock.read("onnx2tf", write_lock(tmp_path / "onnx2tf.txt", "3.12", "a==1\n"))
    assert (lock.name, lock.python) == ("onnx2tf", "3.12")
    key = lock.key("3.12.1")
    assert len(key) == 16 and key == lock.key("3.12.1")
    assert lock.key("3.12.13") != key
    write_lock(lock.path, "3.12", "a==2\n")
    assert lock.key("3.12.1") != key
    (tmp_path / "bare.txt").write_text("a==1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"^bare.txt: no '# python: X.Y' line"):
        ToolLock.read("tool", tmp_path / "bare.txt")


def test_the_shipped_onnx2tf_lock_pins_every_package_for_python_3_12() -> None:
    from tasks.models.formats import onnx_to_tflite

    lock = ToolLock.read("onnx2tf", onnx_to_tflite.LOCK_PATH)
    assert lock.python == "3.12"
    pins = [line for line in lock.path.read_text().splitlines() if line and line[0] != "#"]
    assert "onnx2tf==2.6.9" in pins and all("==" in line for line in pins)


def test_python_on_path_is_taken_before_pyenv(tmp_path: Path) -> None:
    on_path = fake_python(tmp_path / "bin" / "python3.12", "3.12.7")
    fake_python(tmp_path / "pyenv" / "versions" / "3.12.13" / "bin" / "python", "3.12.13")
    assert find_python("3.12", str(tmp_path / "bin"), [tmp_path / "pyenv"]) == (on_path, "3.12.7")


def test_pyenvs_newest_patch_of_the_version_is_taken_and_no_other_minor(tmp_path: Path) -> None:
    root = tmp_path / "pyenv" / "versions"
    for version in ("3.12.1", "3.12.13", "3.12.9", "3.13.0", "3.120.0"):
        fake_python(root / version / "bin" / "python", version)
    found = find_python("3.12", str(tmp_path / "empty"), [tmp_path / "pyenv"])
    assert found == (root / "3.12.13" / "bin" / "python", "3.12.13")


def test_a_candidate_that_answers_another_version_is_passed_over(tmp_path: Path) -> None:
    fake_python(tmp_path / "bin" / "python3.12", "3.11.7")  # a misnamed link
    right = fake_python(tmp_path / "pyenv" / "versions" / "3.12.2" / "bin" / "python", "3.12.2")
    assert find_python("3.12", str(tmp_path / "bin"), [tmp_path / "pyenv"]) == (right, "3.12.2")


def test_no_interpreter_of_the_version_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    fake_python(tmp_path / "pyenv" / "versions" / "3.11.7" / "bin" / "python", "3.11.7")
    with pytest.raises(ToolUnavailable) as refused:
        find_python("3.12", str(tmp_path / "empty"), [tmp_path / "pyenv"])
    assert str(refused.value) == ("no Python 3.12 here (not python3.12 on PATH, not in pyenv's "
                                  "versions): set EDGEFLOW_PYTHON_3_12 to one")


def test_the_named_interpreter_wins_and_must_be_that_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    named = fake_python(tmp_path / "named" / "python", "3.12.4")
    fake_python(tmp_path / "bin" / "python3.12", "3.12.9")
    monkeypatch.setenv("EDGEFLOW_PYTHON_3_12", str(named))
    assert find_python("3.12", str(tmp_path / "bin"), []) == (named, "3.12.4")
    wrong = fake_python(tmp_path / "wrong" / "python", "3.11.7")
    monkeypatch.setenv("EDGEFLOW_PYTHON_3_12", str(wrong))
    with pytest.raises(ToolUnavailable, match=r"^EDGEFLOW_PYTHON_3_12=.*wrong/python is not a "
                                              r"Python 3.12 with venv \(it answered 3.11.7\)$"):
        find_python("3.12", str(tmp_path / "bin"), [])


# ------------------------------------------------------ the environment, for real
def here_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """This interpreter stands for the one a lock asks for (a real venv is made)."""
    monkeypatch.setenv(tool_envs.python_env_name(HERE), sys.executable)


def test_the_environment_is_created_once_from_the_lock_and_then_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here_python(monkeypatch)
    wheel_folder = tmp_path / "wheels"
    wheel = build_wheel(wheel_folder, "edgeflow_probe_tool", "1.0")
    lock = ToolLock.read("probe", write_lock(tmp_path / "probe.txt", HERE, f"{wheel}\n"))
    made: list[list[str]] = []
    real_run = subprocess.run

    def counting(command: list[str], **options: object) -> subprocess.CompletedProcess[str]:
        made.append(command)
        return real_run(command, **options)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(tool_envs.subprocess, "run", counting)
    env = environment(lock, tmp_path / "cache")
    assert env.folder == tmp_path / "cache" / f"probe-{lock.key(HERE_FULL)}"
    assert env.python_version == HERE_FULL
    installs = [command for command in made if "install" in command]
    assert len(installs) == 1 and "--no-deps" in installs[0]
    assert json.loads((env.folder / tool_envs.READY).read_text()) == {
        "tool": "probe", "python": HERE_FULL, "lock": "probe.txt"}
    answer = subprocess.run([str(env.bin / "python"), "-c",
                             "import edgeflow_probe_tool; print(edgeflow_probe_tool.VERSION)"],
                            capture_output=True, text=True, check=True)
    assert answer.stdout.strip() == "1.0"
    made.clear()
    assert environment(lock, tmp_path / "cache") == env
    assert not [command for command in made if "install" in command or "venv" in command]


def test_a_half_built_environment_is_built_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here_python(monkeypatch)
    lock = ToolLock.read("probe", write_lock(tmp_path / "probe.txt", HERE,
                                             f"{build_wheel(tmp_path / 'w', 'probe_a', '2.0')}\n"))
    folder = tmp_path / "cache" / f"probe-{lock.key(HERE_FULL)}"
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "leftover").write_text("an interrupted install")
    env = environment(lock, tmp_path / "cache")
    assert not (env.bin / "leftover").exists()
    assert (env.folder / tool_envs.READY).is_file() and (env.bin / "python").exists()


def test_a_lock_that_cannot_be_installed_is_refused_with_pips_reason_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here_python(monkeypatch)
    lock = ToolLock.read("probe", write_lock(tmp_path / "probe.txt", HERE,
                                             f"{tmp_path / 'missing-1.0-py3-none-any.whl'}\n"))
    with pytest.raises(ToolUnavailable) as refused:
        environment(lock, tmp_path / "cache")
    message = str(refused.value)
    assert message.startswith(f"probe: installing probe.txt with Python {HERE_FULL} failed: ")
    assert "missing-1.0-py3-none-any.whl" in message and "\n" not in message
    assert not any((tmp_path / "cache").glob("probe-*"))


def test_the_tool_runs_with_its_bin_first_and_none_of_this_pythons_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "env"
    script = folder / "bin" / "probe"
    script.parent.mkdir(parents=True)
    script.write_text('#!/bin/sh\necho "$1|${PATH%%:*}|${PYTHONPATH:-none}|'
                      '${PYTHONNOUSERSITE}|$(pwd)"\nexit 3\n', encoding="utf-8")
    script.chmod(0o755)
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    done = tool_envs.ToolEnv("probe", folder, "3.12.1").run(["hello"], tmp_path, timeout=30)
    assert done.returncode == 3
    assert done.stdout.strip() == f"hello|{folder / 'bin'}|none|1|{tmp_path}"


def test_last_lines_keeps_the_last_non_empty_lines_on_one_line() -> None:
    assert tool_envs.last_lines("a\n\nb\n  c  \nd\n", 2) == "c | d"
    assert tool_envs.last_lines("\n \n") == "(no output)"


def build_wheel(folder: Path, name: str, version: str) -> Path:
    """A pure-Python wheel of one module, ``VERSION = version``, built here (no index)."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}.py": f"VERSION = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    records = []
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            data = text.encode()
            archive.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{path},sha256={digest},{len(data)}")
        archive.writestr(f"{info}/RECORD", "\n".join([*records, f"{info}/RECORD,,"]) + "\n")
    assert os.path.getsize(wheel) > 0
    return wheel
