"""A DVC remote a team shares (flows/remotes.py, ``edgeflow remote setup``): the URL
checks and the ``dvc`` commands on their own, then README's "For a team" commands
against real servers on loopback, an OpenSSH server (as the farm tests start one) and
SeaweedFS's S3: one clone sets the remote up and pushes, a second clone of it pulls, and
gets every file byte for byte with ``dvc status`` clean.

The project is small on purpose (``dvc add`` of a folder of random files, not a trained
lifecycle: tests/flows/test_dvc_project.py pushes and pulls a real one to the default
remote); what is checked here is the remote, not what is in it.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.remotes import REMOTE_KINDS, remote_commands, remote_kind, setup_remote
from tasks.core.errors import UsageError
from tests.seaweed import S3Server, object_count
from tests.sshd import SshServer, keygen, sshd_available, start_sshd, stop_sshd
from tests.team_readme import run_lines, team_block

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------- the URL


@pytest.mark.parametrize("url, says", [
    ("ftp://files.lan/dvc", "ftp scheme; allowed schemes: ssh://[user@]host[:port]/absolute/path, "
                            "s3://bucket[/prefix]"),
    ("/mnt/nas/dvc", "no scheme; allowed schemes: ssh://"),
    ("gs://bucket/dvc", "gs scheme; allowed schemes"),
    ("ssh://nas.lan", "is incomplete: ssh://[user@]host[:port]/absolute/path"),
    ("ssh:///srv/dvc", "is incomplete"),
    ("s3:///prefix", "is incomplete: s3://bucket[/prefix]"),
    ("ssh://nas.lan:port/srv", "Port could not be cast"),
    ("ssh://me:hunter2@nas.lan/srv/dvc", "holds a credential"),
    ("s3://KEY:SECRET@bucket/dvc", "holds a credential"),
])
def test_a_bad_url_is_one_usage_error_naming_what_is_allowed(url: str, says: str) -> None:
    with pytest.raises(UsageError) as raised:
        remote_kind(url)
    assert says in str(raised.value) and url in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_kinds_are_the_plugins_dvc_has() -> None:
    """Every kind edgeflow offers is one the installed DVC serves (its plugin present)."""
    from dvc.fs import get_cloud_fs  # noqa: F401 - DVC's resolver of a remote's scheme
    from dvc.fs import known_implementations

    assert set(REMOTE_KINDS) == {"ssh", "s3"}
    for scheme in REMOTE_KINDS:
        assert scheme in known_implementations
        __import__(f"dvc_{scheme}")  # the plugin itself, not only its name


def test_the_commands_keep_a_key_file_out_of_the_committed_config(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    assert remote_commands("team", "ssh://dvc@nas.lan:2222/srv/dvc", keyfile=key) == [
        ("remote", "add", "--force", "--default", "team", "ssh://dvc@nas.lan:2222/srv/dvc"),
        ("remote", "modify", "--local", "team", "keyfile", str(key.resolve()))]
    assert remote_commands("team", "s3://bucket/dvc", endpoint_url="http://minio:9000",
                           local=True) == [
        ("remote", "add", "--local", "--force", "--default", "team", "s3://bucket/dvc"),
        ("remote", "modify", "--local", "team", "endpointurl", "http://minio:9000")]


@pytest.mark.parametrize("url, option, says", [
    ("s3://bucket/dvc", {"keyfile": Path("key")}, "--keyfile does not apply to a s3:// remote "
                                                  "(it takes: --endpoint-url)"),
    ("ssh://nas.lan/srv", {"endpoint_url": "http://x"}, "--endpoint-url does not apply to a ssh://"),
])
def test_an_option_of_another_kind_is_refused(url: str, option: dict, says: str) -> None:
    with pytest.raises(UsageError) as raised:
        remote_commands("team", url, **option)
    assert says in str(raised.value)


# --------------------------------------------------------------------------- real servers


def _environment(home: Path, more: dict[str, str] | None = None) -> dict[str, str]:
    """What README's commands run with: this installation's edgeflow and dvc first on
    PATH, a HOME of the test's (the private remote and DVC's global config are there),
    a git identity."""
    return {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": str(home),
            "PYTHONPATH": str(REPO), "GIT_AUTHOR_NAME": "test", "GIT_COMMITTER_NAME": "test",
            "GIT_AUTHOR_EMAIL": "test@example.com", "GIT_COMMITTER_EMAIL": "test@example.com",
            **(more or {})}


def _sh(line: str, cwd: Path, env: dict[str, str]) -> str:
    return run_lines([line], cwd, env)[0].stdout


def _digests(root: Path) -> dict[str, str]:
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A git + DVC project with this repository's .dvc/config (default remote
    ``userstore``) and a DVC-tracked folder of random files, committed; and its HOME."""
    root = tmp_path_factory.mktemp("team-project") / "project"
    home = tmp_path_factory.mktemp("team-home")
    env = _environment(home)
    root.mkdir()
    _sh("git init --quiet && dvc init --quiet", root, env)
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    artifacts = root / "models" / "variants"
    (artifacts / "tflite-int8").mkdir(parents=True)
    (artifacts / "tflite-int8" / "model.tflite").write_bytes(os.urandom(300_000))
    (artifacts / "index.json").write_text('{"variants": ["tflite-int8"]}\n')
    (root / "data.npz").write_bytes(os.urandom(50_000))
    _sh("dvc add --quiet models data.npz && git add -A && git commit --quiet -m project",
        root, env)
    return root, home


def _push_and_pull(dvc_project: tuple[Path, Path], tmp_path: Path, block: str,
                   servers: dict[str, str], teammate: Path) -> tuple[Path, Path, list[str]]:
    """README's block holding ``block`` run in a copy of the project (set up, commit,
    push), then its "teammate" block in a fresh clone by another user (HOME
    ``teammate``); returns both clones and what each of the second's commands printed."""
    project, home = dvc_project
    first = tmp_path / "first"
    shutil.copytree(project, first)
    pushed = run_lines(team_block(block), first, _environment(home, servers))
    print(f"$ (first clone) {team_block(block)[-1]}\n{pushed[-1].stdout}{pushed[-1].stderr}")
    second = tmp_path / "second"
    env = _environment(teammate, servers)
    _sh(f"git clone --quiet {first} {second}", tmp_path, env)
    assert not (second / "models").exists() and not (second / ".dvc" / "cache").exists()
    pulled = run_lines(team_block("dvc pull"), second, env)
    said = [f"{result.stdout}{result.stderr}" for result in pulled]
    for line, output in zip(team_block("dvc pull"), said):
        print(f"$ (second clone) {line}\n{output}")
    return first, second, said


def _same_files(first: Path, second: Path) -> None:
    """Every DVC-tracked file of ``second`` has the sha256 of ``first``'s."""
    ours = {name: digest for name, digest in _digests(first).items()
            if name.startswith("models/") or name == "data.npz"}
    theirs = {name: digest for name, digest in _digests(second).items() if name in ours
              or name.startswith("models/")}
    assert theirs == ours and len(ours) == 3
    for name, digest in ours.items():
        print(f"sha256 {digest}  {name} (both clones)")


@pytest.fixture(scope="module")
def ssh_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if not sshd_available():
        pytest.skip("OpenSSH server not installed (`make test` installs it when run as root)")
    server = start_sshd(tmp_path_factory.mktemp("dvc-sshd"))
    yield server
    stop_sshd(server)


def test_readme_ssh_remote_push_from_one_clone_pull_into_another(
        dvc_project: tuple[Path, Path], ssh_remote: SshServer, tmp_path: Path) -> None:
    folder = tmp_path / "remote-on-the-server" / "dvc"
    # The teammate logs in with a key of their own, their default one (~/.ssh/id_ed25519).
    teammate = tmp_path / "teammate-home"
    (teammate / ".ssh").mkdir(parents=True)
    keygen(teammate / ".ssh" / "id_ed25519")
    with open(ssh_remote.root / "authorized_keys", "a") as authorized:
        authorized.write((teammate / ".ssh" / "id_ed25519.pub").read_text())
    first, second, said = _push_and_pull(dvc_project, tmp_path, "ssh://", {
        "DVC_USER": getpass.getuser(), "DVC_HOST": ssh_remote.host,
        "DVC_PORT": str(ssh_remote.port), "DVC_FOLDER": str(folder),
        "DVC_KEY": str(ssh_remote.client_key)}, teammate)
    assert sum(1 for path in folder.rglob("*") if path.is_file()) >= 3, "nothing pushed"
    committed = subprocess.run(["git", "show", "HEAD:.dvc/config"], cwd=second,
                               capture_output=True, text=True, check=True).stdout
    assert (f"url = ssh://{getpass.getuser()}@{ssh_remote.host}:{ssh_remote.port}{folder}"
            in committed) and "remote = team" in committed
    assert "keyfile" not in committed  # the key file is one person's: config.local
    assert f"keyfile = {ssh_remote.client_key}" in (first / ".dvc" / "config.local").read_text()
    assert "Data and pipelines are up to date." in said[-1]
    _same_files(first, second)


def test_readme_s3_remote_push_from_one_clone_pull_into_another(
        dvc_project: tuple[Path, Path], s3_remote: S3Server, tmp_path: Path) -> None:
    assert object_count(s3_remote) == 0
    teammate = tmp_path / "teammate-home"
    teammate.mkdir()
    first, second, said = _push_and_pull(dvc_project, tmp_path, "s3://", {
        "DVC_BUCKET": s3_remote.bucket, "S3_ENDPOINT": s3_remote.endpoint,
        **s3_remote.credentials()}, teammate)
    assert object_count(s3_remote) >= 3, "nothing pushed"
    committed = (second / ".dvc" / "config").read_text()
    assert f"url = s3://{s3_remote.bucket}/edgeflow" in committed
    assert f"endpointurl = {s3_remote.endpoint}" in committed
    assert "edgeflow-team-secret" not in committed  # credentials come from the environment
    assert "Data and pipelines are up to date." in said[-1]
    _same_files(first, second)


def test_without_credentials_the_s3_remote_refuses_and_nothing_is_pulled(
        dvc_project: tuple[Path, Path], s3_remote: S3Server, tmp_path: Path) -> None:
    """The store is really checking who asks: the same pull with wrong credentials fails
    (so a passing pull above came through the store, not from a cache)."""
    project, home = dvc_project
    clone = tmp_path / "clone"
    env = _environment(home, {"DVC_BUCKET": s3_remote.bucket, "S3_ENDPOINT": s3_remote.endpoint,
                              **s3_remote.credentials()})
    shutil.copytree(project, clone)
    run_lines(team_block("s3://")[:1], clone, env)
    shutil.rmtree(clone / ".dvc" / "cache")
    shutil.rmtree(clone / "models")
    (clone / "data.npz").unlink()
    refused = subprocess.run(["dvc", "pull"], cwd=clone, capture_output=True, text=True,
                             timeout=300, check=False,
                             env={**os.environ, **env, "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert refused.returncode != 0
    assert "failed to pull data from the cloud" in refused.stderr
    assert not (clone / "data.npz").exists() and not (clone / "models").exists()


def test_a_run_says_when_dvc_push_would_share_nothing(tmp_path: Path) -> None:
    """The project's committed default (userstore, a folder of this user) gets the line;
    a team remote set up in .dvc/config, or in .dvc/config.local over it, does not."""
    from flows.remotes import PRIVATE_REMOTE, default_remote, private_remote_note

    repo = Path(__file__).resolve().parents[2]
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project,
                   check=True)
    committed = (repo / ".dvc" / "config").read_text()  # its comments and all, no git here
    (project / ".dvc" / "config").write_text(committed.replace("[core]", "[core]\n    no_scm = true", 1))
    assert default_remote(project) == PRIVATE_REMOTE
    assert private_remote_note(project) == (
        "dvc push: the default remote userstore is a folder private to you on this machine; "
        "`edgeflow remote setup URL` names the team's (README: For a team)")
    (project / ".dvc" / "config.local").write_text("[core]\n    remote = team\n")
    assert (default_remote(project), private_remote_note(project)) == ("team", None)
    (project / ".dvc" / "config.local").write_text("[core]\n    remote = userstore\n")
    assert private_remote_note(project) is not None
    setup_remote(project, "team", "s3://bucket/edgeflow")  # DVC's own remote add --default
    (project / ".dvc" / "config.local").unlink()
    assert (default_remote(project), private_remote_note(project)) == ("team", None)
    assert private_remote_note(None) is None  # not a DVC project: nothing to push
    assert default_remote(tmp_path / "nowhere") is None
