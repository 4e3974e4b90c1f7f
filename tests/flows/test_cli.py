"""The real ``edgeflow`` command on bad input: one line on stderr starting
``edgeflow: error:``, no traceback, and one exit code per kind of mistake (2 for
configuration and usage, 1 for a missing or damaged output of an earlier step).
Nothing here trains or starts Prefect: every case is refused before that."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.steps import STEPS
from tests.helpers import read_only_tree
from tests.tiny import write_tiny_config

EDGEFLOW = Path(sys.executable).parent / "edgeflow"


def edgeflow(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EDGEFLOW), *argv], cwd=cwd, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=120, check=False)


def refused(result: subprocess.CompletedProcess[str], exit_code: int, logged: bool = False) -> str:
    """Assert a one-line error with ``exit_code`` and no traceback; return the line. An
    error raised once a step started (``logged``) ends with ``(log: PATH)``, the run's
    log that records it too: returned without it."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == exit_code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeflow: error: "), result.stderr
    message = lines[0].removeprefix("edgeflow: error: ")
    assert message.endswith(".log)") == logged, message
    if logged:
        message, log = message.removesuffix(")").rsplit(" (log: ", 1)
        assert Path(log).parent.name == "logs" and Path(log).parent.parent.name == ".edgeflow"
        assert f"edgeflow: error: {message}" in Path(log).read_text(), log
    return message


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_tiny_config(tmp_path)
    return tmp_path


ALLOWED_STEPS = f"(allowed: {', '.join(STEPS)})"


def test_an_unknown_step_is_a_usage_error_for_step_and_for_rerun(project: Path) -> None:
    # `run --rerun` exited 1 where `step` exited 2 for the same mistake.
    assert refused(edgeflow("step", "nosuchstep", cwd=project), 2) == (
        f"unknown step 'nosuchstep' {ALLOWED_STEPS}")
    assert refused(edgeflow("run", "--rerun", "nosuchstep", cwd=project), 2) == (
        f"unknown step 'nosuchstep' {ALLOWED_STEPS}")
    assert not (project / "data").exists(), "nothing ran"


@pytest.mark.parametrize("argv", [("step", "prepare"), ("run",)])
def test_a_read_only_experiment_folder_is_one_line(project: Path, argv: tuple[str, ...]) -> None:
    """``chmod -R a-w`` on the experiment: the lock (the first thing written) says so."""
    with read_only_tree(project):
        message = refused(edgeflow(*argv, cwd=project), 1)
    # chmod's refusal for a user; the immutable attribute's (tests.helpers) for root.
    reason = "Operation not permitted" if os.geteuid() == 0 else "Permission denied"
    assert message == (f"the experiment folder {project} is not writable ({reason}: "
                       f"{project / '.edgeflow'}): edgeflow keeps its lock, logs and outputs "
                       "there; make it writable, or copy the experiment to a folder you can "
                       "write")


def test_a_release_to_an_unknown_device_says_so(project: Path) -> None:
    """It said the summary was missing ("run edgeflow run first"), or, with one, that the
    device "has no results": the device is not in the farm."""
    assert refused(edgeflow("release", "nosuch", cwd=project), 2) == (
        "unknown device 'nosuch' (farm.yaml has: local)")


@pytest.mark.parametrize("text, detail", [
    ('{"results": [', "not valid JSON: Expecting value at line 1 column 14"),
    ("[]", "not a JSON object with results, counts, recommendations"),
    ("\udcff", "not UTF-8 text at byte 0"),
])
def test_report_on_a_damaged_summary_is_one_line(project: Path, text: str, detail: str) -> None:
    summary = project / "reports" / "summary.json"
    summary.parent.mkdir()
    summary.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert refused(edgeflow("report", cwd=project), 1) == (
        f"{summary} is damaged ({detail}): run the step that writes it again")


def test_report_on_a_summary_of_the_wrong_shape_names_what_is_wrong(project: Path) -> None:
    summary = project / "reports" / "summary.json"
    summary.parent.mkdir()
    summary.write_text('{"results": [{"device": "pi"}], "counts": {}, "recommendations": {}}')
    assert refused(edgeflow("report", cwd=project), 1) == (
        f"{summary} is damaged (KeyError: 'reference_accuracy'): run `edgeflow step select` again")


def test_report_without_a_summary_says_to_run_first(project: Path) -> None:
    assert refused(edgeflow("report", cwd=project), 1) == (
        f"{project / 'reports' / 'summary.json'} is missing: run `edgeflow run` first")


def test_a_damaged_file_read_by_a_step_is_one_line(project: Path) -> None:
    index = project / "models" / "variants" / "index.json"
    index.parent.mkdir(parents=True)
    index.write_text('{"variants": [}')
    assert refused(edgeflow("step", "benchmark", cwd=project), 1, logged=True) == (
        f"{index} is damaged (not valid JSON: Expecting value at line 1 column 15): run the "
        "step that writes it again")
    index.write_text('{"sources": []}')
    assert refused(edgeflow("step", "benchmark", cwd=project), 1, logged=True) == (
        f"{index} is damaged (not a JSON object with variants): run the step that writes it again")


@pytest.mark.parametrize("argv", [["run"], ["step", "prepare"], ["report"], ["code-manifests"]])
def test_params_pointing_at_a_folder_is_a_configuration_error(project: Path,
                                                              argv: list[str]) -> None:
    message = refused(edgeflow(*argv, "--params", str(project), cwd=project), 2)
    assert str(project) in message and "is a folder" in message


def test_a_missing_farm_file_is_a_configuration_error(project: Path) -> None:
    (project / "farm.yaml").unlink()
    assert refused(edgeflow("step", "prepare", cwd=project), 2) == (
        f"{project / 'farm.yaml'}: file not found")
    assert refused(edgeflow("farm", "probe", cwd=project), 2) == "farm.yaml: file not found"


def test_farm_setup_with_a_named_params_file_that_is_absent_is_refused(project: Path) -> None:
    (project / "farm.yaml").write_text("devices: {local: {}}\n")
    assert refused(edgeflow("farm", "setup", "--params", "absent.yaml", cwd=project), 2) == (
        "absent.yaml: file not found")


def test_an_infinite_timeout_is_refused_before_anything_runs(project: Path) -> None:
    params = (project / "params.yaml").read_text().replace("timeout_seconds: 120",
                                                            "timeout_seconds: .inf")
    (project / "params.yaml").write_text(params)
    assert refused(edgeflow("run", cwd=project), 2) == (
        f"{project / 'params.yaml'}: benchmark.timeout_seconds: must be a number above 0 and "
        "at most 86400 (seconds), got inf")


# --------------------------------------------------------------------------- key files


def ssh_farm(project: Path, key_file: Path) -> None:
    (project / "farm.yaml").write_text(
        "devices:\n  local: {}\n"
        f"  pi: {{transport: ssh, host: 127.0.0.1, port: 1, user: pi, key_file: '{key_file}',"
        " known_hosts: known_hosts, connect_attempts: 3, retry_backoff_seconds: 5, setup: {}}\n")


def test_a_missing_key_file_is_a_configuration_error_not_unreachable(project: Path) -> None:
    # It was retried three times (with 5 s waits here) and the board shown as unreachable.
    absent = project / "keys" / "absent"
    ssh_farm(project, absent)
    for argv in (["farm", "probe"], ["step", "benchmark"], ["farm", "setup", "pi"]):
        assert refused(edgeflow(*argv, cwd=project), 2, logged=argv[0] == "step") == (
            f"device 'pi': key_file {absent} does not exist (create the key, or fix key_file "
            "in farm.yaml)"), argv


def test_a_key_file_readable_by_others_is_refused_before_training(project: Path) -> None:
    key = project / "farm_key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o644)
    ssh_farm(project, key)
    assert refused(edgeflow("run", cwd=project), 2) == (
        f"device 'pi': key_file {key} is open to group or others (mode 0644), which OpenSSH "
        f"refuses for a private key: chmod 600 {key}")
    assert not (project / "data").exists(), "refused before the first step"


def test_a_folder_as_key_file_is_refused(project: Path) -> None:
    ssh_farm(project, project)
    assert refused(edgeflow("farm", "probe", cwd=project), 2) == (
        f"device 'pi': key_file {project} is a folder, not a private key file")


# --------------------------------------------------------------------------- MLflow server


@pytest.mark.parametrize("argv", [["run"], ["step", "track"]])
@pytest.mark.parametrize("server", ["nothing listens", "listens, never answers"])
def test_a_tracking_server_that_does_not_answer_is_refused_at_once_naming_it(
        project: Path, argv: list[str], server: str) -> None:
    """MLflow's client retried a dead server for more than 200 s, after the training."""
    import socket
    import time

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        if server == "nothing listens":
            listener.close()
        else:
            listener.listen()  # the kernel completes connections; nobody reads or writes
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        started = time.monotonic()
        result = subprocess.run([str(EDGEFLOW), *argv], cwd=project, env=env,
                                capture_output=True, text=True, timeout=120, check=False)
        took = time.monotonic() - started
    reason = "[Errno 111] Connection refused" if server == "nothing listens" else "timed out"
    assert refused(result, 2) == (
        f"MLFLOW_TRACKING_URI {uri}: no MLflow server answers there ({reason}): start it "
        "(make mlflow), or unset MLFLOW_TRACKING_URI to track into the experiment's mlflow/ "
        "folder")
    assert not (project / "data").exists() and not (project / "mlflow").exists(), "no work"
    assert took < 60, f"{took:.0f} s"


# --------------------------------------------------------------------------- farm exit codes


MCU = "  esp: {transport: mcu, flash_kb: 4096, ram_kb: 512}\n"


def test_farm_probe_exits_by_the_class_of_its_failures(project: Path) -> None:
    # It once exited 0 for an unprobed device only when its message said "microcontroller".
    (project / "farm.yaml").write_text("devices:\n" + MCU)
    alone = edgeflow("farm", "probe", cwd=project)
    assert (alone.returncode, alone.stderr) == (0, ""), "an MCU profile is no failure"
    key = project / "farm_key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o600)
    (project / "farm.yaml").write_text(
        "devices:\n" + MCU + f"  ghost: {{transport: ssh, host: 127.0.0.1, port: 1, user: pi, "
        f"key_file: '{key}', known_hosts: known_hosts, connect_attempts: 1}}\n")
    assert refused(edgeflow("farm", "probe", cwd=project), 1) == (
        "ghost: could not be probed (the table says why)")  # a DeviceUnreachable


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (3, 3), (130, 130),
                                               ("a message", 1)])
def test_the_exit_status_is_pythons_for_the_system_exit(code: object, status: int) -> None:
    from flows.cli.process import exit_status

    assert exit_status(code) == status


ENDING = """
import atexit, sys
from pathlib import Path
import flows.cli as cli

marks = Path(sys.argv[1])


class Finalised:
    def __del__(self):  # runs in the interpreter's teardown, which the command skips
        with marks.open("a") as out:
            out.write("teardown\\n")


KEPT = Finalised()


def command():
    atexit.register(lambda: marks.open("a").write("exit handler\\n"))
    print("printed, not flushed", end="")
    if sys.argv[2] == "raise":
        raise RuntimeError("a bug")
    sys.exit(int(sys.argv[2]))


cli.app = command
cli.main()
"""


@pytest.mark.parametrize(("how", "status"), [("0", 0), ("3", 3), ("raise", 1)])
def test_the_command_ends_after_every_exit_handler_with_its_status_and_no_teardown(
        tmp_path: Path, how: str, status: int) -> None:
    """The last exit handler ends the process: the handlers that libraries register
    during the command (Prefect's log delivery, the temporary server's stop) have run,
    output is flushed, the status is the command's, and the interpreter's half-second
    teardown of every imported module is skipped."""
    marks = tmp_path / "marks"
    done = subprocess.run([sys.executable, "-c", ENDING, str(marks), how], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == status, done.stderr
    assert done.stdout == "printed, not flushed"
    assert marks.read_text() == "exit handler\n"
    assert ("RuntimeError: a bug" in done.stderr) == (how == "raise")


def test_code_manifests_writes_one_per_step_and_then_none(project: Path) -> None:
    """What dvc.yaml's code stage runs: every manifest the first time, none again."""
    first = edgeflow("code-manifests", cwd=project)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"code manifests: {', '.join(STEPS)}\n"
    assert sorted(path.stem for path in (project / "code-manifests").iterdir()) == sorted(STEPS)
    again = edgeflow("code-manifests", cwd=project)
    assert again.stdout == "code manifests: none changed\n"


def test_sighup_stops_a_command_unless_it_was_started_under_nohup() -> None:
    """A closed terminal stops a command as Ctrl-C does (tests/farm/test_faults.py sends
    it to a real benchmark); ``nohup edgeflow run`` asked to outlive the terminal."""
    # Both set explicitly: the tests themselves may run under nohup.
    probe = ("import signal, sys\n"
             "signal.signal(signal.SIGHUP, signal.SIG_IGN if sys.argv[1] == 'nohup' "
             "else signal.SIG_DFL)\n"
             "from flows.cli.process import stop_signals\n"
             "print(' '.join(signal.Signals(number).name for number in stop_signals()))\n")
    stops = {how: subprocess.run([sys.executable, "-c", probe, how], capture_output=True,
                                 text=True, cwd=Path(__file__).resolve().parents[2],
                                 check=True).stdout.strip()
             for how in ("terminal", "nohup")}
    assert stops == {"terminal": "SIGINT SIGTERM SIGHUP", "nohup": "SIGINT SIGTERM"}
