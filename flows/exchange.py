"""Files between machines through the DVC remote both reach: how a placed step
(:mod:`flows.placement`) gets its inputs on the worker's machine and its outputs back,
with no disk the two share.

:func:`send` puts files and folders in the default remote of a DVC project (DVC's own
``dvc add --to-remote``: content-addressed, straight from where they lie, nothing in the
project's cache, an object the remote already holds not sent again) and returns each
one's pointer: the ``outs`` entry of the ``.dvc`` file DVC wrote (``md5``, ``size``,
``nfiles``). :func:`receive` writes those ``.dvc`` files and ``dvc pull``s them, on any
machine whose project names the same remote, then puts each in place, replaced whole.

Both work in a scratch DVC project (``dvc init --no-scm`` in a temporary folder) that
takes the project's default remote as it is configured there, ``.dvc/config.local`` and
the user's configuration included (an SSH key file; S3 credentials come from the
environment, as for ``dvc push``), and is removed after. DVC runs in a child process,
as ``dvc commit`` does for :mod:`flows.versioning`: its logging and signal handling stay
out of the flow's process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.errors import EdgeflowError, folded

Pointer = dict[str, Any]  # a .dvc file's outs entry: md5 (.dir for a folder), size, nfiles


class ExchangeFailed(EdgeflowError):
    """Files could not be sent to, or received from, the DVC remote."""


# The child: reads {"project", "send": {name: path}} or {"project", "receive": {name:
# [pointer, destination]}} on stdin; writes {"remote": [name, url], "sent": {name: pointer}} or
# {"error": text} on stdout.
_EXCHANGE = """\
import json, os, shutil, sys, tempfile
import yaml
from dvc.exceptions import DvcException
from dvc.repo import Repo

job = json.load(sys.stdin)
answer = {}
scratch = tempfile.mkdtemp(prefix="edgeflow-exchange-")
try:
    with Repo(job["project"]) as project:
        name = project.config["core"].get("remote")
        if not name:
            raise DvcException("no default DVC remote (`edgeflow remote setup URL`)")
        remote = dict(project.config["remote"][name])
    answer["remote"] = [name, str(remote["url"])]
    Repo.init(scratch, no_scm=True).close()
    with Repo(scratch) as repo, repo.config.edit("local") as conf:
        conf["remote"][name] = remote
        conf["core"]["remote"] = name
    os.chdir(scratch)
    names = {key: f"out{index}" for index, key in enumerate(job.get("send") or job["receive"])}
    with Repo(scratch) as repo:
        if "send" in job:
            answer["sent"] = {}
            for key, source in job["send"].items():
                repo.add([source], out=names[key], to_remote=True)
                with open(names[key] + ".dvc") as stage:
                    entry = yaml.safe_load(stage)["outs"][0]
                entry.pop("path")
                answer["sent"][key] = entry
        else:
            for key, (entry, _) in job["receive"].items():
                with open(names[key] + ".dvc", "w") as stage:
                    yaml.safe_dump({"outs": [{**entry, "path": names[key]}]}, stage)
            repo.pull(targets=[names[key] + ".dvc" for key in names])
            for key, (_, destination) in job["receive"].items():
                if os.path.isdir(destination) and not os.path.islink(destination):
                    shutil.rmtree(destination)
                elif os.path.lexists(destination):
                    os.remove(destination)
                os.makedirs(os.path.dirname(destination), exist_ok=True)
                shutil.move(os.path.join(scratch, names[key]), destination)
except DvcException as error:
    answer["error"] = " ".join(str(error).split())
except Exception as error:  # the store's own (an S3 error, a refused connection)
    answer["error"] = f"{type(error).__name__}: " + " ".join(str(error).split())
finally:
    os.chdir(os.path.dirname(scratch))
    shutil.rmtree(scratch, ignore_errors=True)
print(json.dumps(answer))
"""


def _run(project: Path, job: dict[str, Any], what: str) -> dict[str, Any]:
    """Run one exchange in the child; ExchangeFailed naming ``what``, the remote and
    DVC's reason when it fails."""
    result = subprocess.run([sys.executable, "-c", _EXCHANGE], input=json.dumps(
        {"project": str(project), **job}), capture_output=True, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        answer = {}
    if result.returncode != 0 or "error" in answer or not answer:
        reason = answer.get("error") or (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExchangeFailed(folded(f"{what} through {_remote_text(answer, project)}: "
                                    f"{reason}", 600))
    return answer


def _remote_text(answer: dict[str, Any], project: Path) -> str:
    """The remote an answer names, without credentials: ``DVC remote team (s3://b/x)``."""
    from tasks.core.mlflow_store import without_credentials

    if "remote" not in answer:
        return f"the default DVC remote of {project}"
    name, url = answer["remote"]
    return f"DVC remote {name} ({without_credentials(url)})"


@dataclass(frozen=True)
class Sent:
    """What :func:`send` put in the remote: each path's pointer, by its name, and the
    remote (``DVC remote team (s3://bucket/edgeflow)``, without credentials)."""

    pointers: dict[str, Pointer]
    remote: str


def send(project: Path, paths: dict[str, Path]) -> Sent:
    """Put each existing path (a file or a folder) in the default remote of the DVC
    ``project``. A path that does not exist has no pointer (the receiver leaves its place
    empty)."""
    present = {name: str(path) for name, path in paths.items() if path.exists()}
    if not present:
        return Sent({}, "")
    answer = _run(project, {"send": present}, f"sending {', '.join(present)}")
    return Sent(answer["sent"], _remote_text(answer, project))


def receive(project: Path, pointers: dict[str, Pointer], destinations: dict[str, Path]) -> None:
    """Pull each pointed file or folder from the default remote of the DVC ``project``
    and put it at its destination (by name), replacing what was there."""
    if pointers:
        _run(project, {"receive": {name: [pointer, str(destinations[name])]
                                   for name, pointer in pointers.items()}},
             f"receiving {', '.join(pointers)}")
