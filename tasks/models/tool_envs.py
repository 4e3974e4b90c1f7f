"""Pinned Python environments for converters that cannot share edgeflow's venv.

Some converters need another Python or pins that clash with ``requirements.lock``
(onnx2tf 2.x: Python >= 3.12, exact numpy/onnx/onnxruntime pins). Each has a lock file
(:class:`ToolLock`): every package pinned, and the Python minor version it was made with
on a ``# python: 3.12`` line. :func:`environment` creates the venv on first use, from an
interpreter of exactly that version found on this machine (:func:`find_python`), with
``pip install --no-deps -r <lock>`` (the lock is the whole set: nothing is resolved
again), in ``<cache>/<tool>-<key>`` where ``key`` is the sha256 of the lock's text and the
interpreter's full version; later uses find it at once. It is built in a scratch folder
under a lock and moved into place complete, so an interrupted install is never reused.

Where no such interpreter is, or the install fails (no network to the package index),
:class:`ToolUnavailable` says so in one line: the exporter reports its variant skipped
with that reason. The converter runs as a subprocess (:meth:`ToolEnv.run`) with files in
and out, nothing imported into this process.

The cache is ``$EDGEFLOW_TOOLS_CACHE``, else ``$XDG_CACHE_HOME/edgeflow/tools`` (or
``~/.cache/edgeflow/tools``); an interpreter can be named with ``EDGEFLOW_PYTHON_3_12``
(for the ``3.12`` a lock asks for).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.core.locks import file_lock

CACHE_ENV = "EDGEFLOW_TOOLS_CACHE"
PYTHON_LINE = re.compile(r"^#\s*python:\s*(\d+\.\d+)\s*$", re.MULTILINE)
READY = "edgeflow-tool.json"
INSTALL_SECONDS = 1800
VERSION_SECONDS = 30
# What pip's failure is reduced to: its last lines say what went wrong.
REASON_LINES = 3


class ToolUnavailable(Exception):
    """A tool's environment cannot be had here: no interpreter of its version, or its
    packages cannot be installed. One line, naming the tool and what to do: the
    exporter's skip reason, never an error of an edgeflow command."""


@dataclass(frozen=True)
class ToolLock:
    """A tool's lock file: its name (the console script it runs), the Python minor
    version it needs and the file."""

    name: str
    path: Path
    python: str

    @classmethod
    def read(cls, name: str, path: Path) -> ToolLock:
        """The lock in ``path``; ValueError where it names no ``# python: X.Y``."""
        found = PYTHON_LINE.search(path.read_text(encoding="utf-8"))
        if found is None:
            raise ValueError(f"{path.name}: no '# python: X.Y' line (the Python it was made "
                             f"with)")
        return cls(name, path, found.group(1))

    def key(self, python_version: str) -> str:
        """What names the environment: the lock's text and the interpreter's version."""
        digest = hashlib.sha256(self.path.read_bytes())
        digest.update(python_version.encode())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ToolEnv:
    """A ready environment: its folder and the interpreter version it was made with."""

    name: str
    folder: Path
    python_version: str

    @property
    def bin(self) -> Path:
        return self.folder / "bin"

    def run(self, arguments: Sequence[str], cwd: Path,
            timeout: float) -> subprocess.CompletedProcess[str]:
        """The tool's console script with ``arguments`` in ``cwd``, stdout and stderr
        together in ``stdout``. Its own bin folder leads PATH (onnx2tf calls onnxsim by
        name); nothing of this process's Python environment leaks in."""
        environment = {key: value for key, value in os.environ.items()
                       if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
        environment.update(PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
                           PYTHONNOUSERSITE="1", NO_COLOR="1")
        return subprocess.run([str(self.bin / self.name), *arguments], cwd=cwd, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=environment, timeout=timeout, check=False)


def default_cache() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeflow" / "tools"


def python_env_name(version: str) -> str:
    """``EDGEFLOW_PYTHON_3_12`` for ``3.12``."""
    return "EDGEFLOW_PYTHON_" + version.replace(".", "_")


def interpreter_version(python: Path) -> str | None:
    """``3.12.1`` for a working interpreter with venv, None for anything else."""
    try:
        answer = subprocess.run(
            [str(python), "-c", "import sys, venv; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True, text=True, timeout=VERSION_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return answer.stdout.strip() if answer.returncode == 0 else None


def _pyenv_candidates(version: str, roots: Iterable[Path]) -> list[Path]:
    """pyenv's installs of ``version`` (3.12.1, 3.12.13...), newest patch first."""
    found = []
    for root in roots:
        for folder in (root / "versions").glob(f"{version}.*"):
            patch = folder.name[len(version) + 1:]
            if patch.isdigit():
                found.append((int(patch), folder / "bin" / "python"))
    return [path for _, path in sorted(found, reverse=True)]


def find_python(version: str, search_path: str | None = None,
                pyenv_roots: Iterable[Path] | None = None) -> tuple[Path, str]:
    """An interpreter of exactly ``version`` (``3.12``) and its full version: the one
    ``EDGEFLOW_PYTHON_3_12`` names (which must be one), else ``python3.12`` on PATH, else
    pyenv's newest 3.12.x. :class:`ToolUnavailable` where there is none."""
    variable = python_env_name(version)
    if os.environ.get(variable):
        named = Path(os.environ[variable])
        full = interpreter_version(named)
        if full is None or not full.startswith(f"{version}."):
            raise ToolUnavailable(f"{variable}={named} is not a Python {version} with venv "
                                  f"({'it answered ' + full if full else 'it does not run'})")
        return named, full
    if pyenv_roots is None:
        pyenv_roots = [Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")]
    on_path = shutil.which(f"python{version}", path=search_path)
    candidates = ([Path(on_path)] if on_path else []) + _pyenv_candidates(version, pyenv_roots)
    for candidate in candidates:
        full = interpreter_version(candidate)
        if full is not None and full.startswith(f"{version}."):
            return candidate, full
    raise ToolUnavailable(f"no Python {version} here (not python{version} on PATH, not in "
                          f"pyenv's versions): set {variable} to one")


def environment(lock: ToolLock, cache: Path | None = None) -> ToolEnv:
    """The tool's ready environment, created on first use (:mod:`this module's
    <tasks.models.tool_envs>` contract)."""
    python, full = find_python(lock.python)
    cache = cache or default_cache()
    folder = cache / f"{lock.name}-{lock.key(full)}"
    if not (folder / READY).is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with file_lock(cache / f"{lock.name}.lock", wait_seconds=None):
            if not (folder / READY).is_file():
                _create(lock, python, full, folder)
    return ToolEnv(lock.name, folder, full)


def _create(lock: ToolLock, python: Path, full: str, folder: Path) -> None:
    """Build the environment in ``folder`` itself (a venv's scripts name their interpreter
    by its absolute path: one built elsewhere and moved would not start); the marker file,
    written last, is what makes it ready, so a half-built one is removed and built again."""
    shutil.rmtree(folder, ignore_errors=True)
    steps = [[str(python), "-m", "venv", str(folder)],
             [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
              "--disable-pip-version-check", "--no-input", "-r", str(lock.path)]]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_SECONDS,
                                  check=False)
        except subprocess.TimeoutExpired:
            shutil.rmtree(folder, ignore_errors=True)
            raise ToolUnavailable(f"{lock.name}: installing {lock.path.name} took over "
                                  f"{INSTALL_SECONDS} s") from None
        if done.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise ToolUnavailable(f"{lock.name}: installing {lock.path.name} with Python {full} "
                                  f"failed: {last_lines(done.stderr or done.stdout)}")
    (folder / READY).write_text(json.dumps({"tool": lock.name, "python": full,
                                            "lock": lock.path.name}), encoding="utf-8")


def last_lines(text: str, count: int = REASON_LINES) -> str:
    """The last ``count`` non-empty lines of ``text``, joined on one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "(no output)"
