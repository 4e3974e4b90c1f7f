"""A DVC remote a team shares (``edgeflow remote setup URL``): DVC's own ``dvc remote
add`` and ``dvc remote modify``, run in the project, for the kinds of remote DVC's
plugins in the lock serve (``dvc[ssh,s3]``). Nothing is copied by edgeflow: ``dvc push``
and ``dvc pull`` move the files.

Where each setting goes:

- the remote's URL, its default flag and an S3 endpoint are the team's: ``.dvc/config``
  (committed: every clone pushes to and pulls from the same store), or
  ``.dvc/config.local`` with ``local`` (this clone only);
- what belongs to one person (an SSH key file) always goes to ``.dvc/config.local``,
  never into git. S3 credentials are not taken at all: DVC reads them from the AWS
  variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``) or ``~/.aws/credentials``.

The project's default remote ``userstore`` (``~/.cache/edgeflow/dvc-remote``) is a folder
of this user on this machine: a push there shares nothing with anyone else.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from tasks.core.errors import EdgeflowError, UsageError, folded

PRIVATE_REMOTE = "userstore"  # .dvc/config's default: this user's folder on this machine


@dataclass(frozen=True)
class RemoteKind:
    """One kind of shared remote: the URL it takes and the options that apply to it."""

    scheme: str
    form: str  # what a URL of this kind looks like, for the error that names the kinds
    complete: Callable[[SplitResult], bool]  # whether the URL names all it must
    options: frozenset[str]  # the setup options (``keyfile``, ``endpoint_url``) it takes


REMOTE_KINDS: dict[str, RemoteKind] = {kind.scheme: kind for kind in (
    RemoteKind("ssh", "ssh://[user@]host[:port]/absolute/path",
               lambda url: bool(url.hostname) and len(url.path) > 1, frozenset({"keyfile"})),
    RemoteKind("s3", "s3://bucket[/prefix]", lambda url: bool(url.netloc),
               frozenset({"endpoint_url"})),
)}


@dataclass(frozen=True)
class RemoteSetup:
    """What :func:`setup_remote` did: the remote and the ``dvc`` commands it ran."""

    name: str
    url: str
    commands: tuple[tuple[str, ...], ...]


def remote_kind(url: str) -> RemoteKind:
    """The kind of ``url``; a UsageError naming the allowed schemes (and their form) for
    any other URL, or one that lacks its host, path or bucket."""
    allowed = ", ".join(kind.form for kind in REMOTE_KINDS.values())
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is no number raises here
    except ValueError as error:
        raise UsageError(f"remote URL {url!r}: {error} (allowed: {allowed})") from None
    kind = REMOTE_KINDS.get(parts.scheme)
    if kind is None:
        raise UsageError(f"remote URL {url!r}: {parts.scheme or 'no'} scheme; allowed "
                         f"schemes: {allowed}")
    if not kind.complete(parts):
        raise UsageError(f"remote URL {url!r} is incomplete: {kind.form}")
    if parts.password or (parts.scheme == "s3" and parts.username):
        raise UsageError(f"remote URL {url!r} holds a credential, which .dvc/config would "
                         "commit: give it to DVC another way (an SSH key with --keyfile, "
                         "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for S3)")
    return kind


def remote_commands(name: str, url: str, keyfile: Path | None = None,
                    endpoint_url: str | None = None,
                    local: bool = False) -> list[tuple[str, ...]]:
    """The ``dvc`` arguments that make ``url`` the default remote ``name``; a UsageError
    for a bad URL or an option its kind does not take."""
    kind = remote_kind(url)
    given = {option for option, value in (("keyfile", keyfile), ("endpoint_url", endpoint_url))
             if value is not None}
    for option in sorted(given - kind.options):
        raise UsageError(f"--{option.replace('_', '-')} does not apply to a {kind.scheme}:// "
                         f"remote (it takes: "
                         f"{', '.join('--' + o.replace('_', '-') for o in sorted(kind.options))})")
    where = ("--local",) if local else ()
    commands = [("remote", "add", *where, "--force", "--default", name, url)]
    if endpoint_url is not None:
        commands.append(("remote", "modify", *where, name, "endpointurl", endpoint_url))
    if keyfile is not None:  # one person's key: never in the committed config
        commands.append(("remote", "modify", "--local", name, "keyfile",
                         str(Path(keyfile).expanduser().resolve())))
    return commands


def setup_remote(project: Path, name: str, url: str, keyfile: Path | None = None,
                 endpoint_url: str | None = None, local: bool = False) -> RemoteSetup:
    """Run :func:`remote_commands` with this installation's DVC in ``project``; an
    EdgeflowError with DVC's last line when one fails (not a DVC project, ...)."""
    commands = remote_commands(name, url, keyfile, endpoint_url, local)
    for arguments in commands:
        done = subprocess.run([sys.executable, "-m", "dvc", *arguments], cwd=project,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise EdgeflowError(f"dvc {' '.join(arguments[:2])} in {project.resolve()}: "
                                f"{folded(said[-1] if said else 'failed', 300)}")
    return RemoteSetup(name, url, tuple(commands))


def default_remote(project: Path) -> str | None:
    """The name of the DVC project's default remote as its own configuration sets it
    (``.dvc/config.local`` over ``.dvc/config``; a user's or the system's configuration
    is not read), or None."""
    import configparser

    name = None
    for config in (project / ".dvc" / "config", project / ".dvc" / "config.local"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read(config, encoding="utf-8")
        except configparser.Error:  # DVC reports a broken config itself, in its words
            continue
        if parser.has_option("core", "remote"):
            name = parser.get("core", "remote")
    return name


def private_remote_note(project: Path | None) -> str | None:
    """The line a run ends with where ``dvc push`` would share nothing: the project's
    default remote is :data:`PRIVATE_REMOTE`, a folder of this user on this machine."""
    if project is None or default_remote(project) != PRIVATE_REMOTE:
        return None
    return (f"dvc push: the default remote {PRIVATE_REMOTE} is a folder private to you on this "
            "machine; `edgeflow remote setup URL` names the team's (README: For a team)")
