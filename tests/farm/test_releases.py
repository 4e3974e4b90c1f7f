"""tasks/farm/releases.py on a local device: what the orchestrator's push hands the
board's manager reaches it (params.release.keep, on_release), seen by what the manager
did, not by the answer's status."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from tasks.config import LocalDevice, ReleaseParams
from tasks.core import device_code
from tasks.farm import releases
from tasks.farm.transports import connect
from tests.tasks.device.test_releases import many_ids


def built(root: Path, name: str, passes: bool = True) -> tuple[Path, tuple[str, ...]]:
    """A release as the release step builds it: its manifest (and digest), the manager,
    and the verdict its stand-in check answers."""
    folder = root / name
    folder.mkdir(parents=True)
    manifest = json.dumps({"manifest_version": 2, "variant": "onnx-fp32", "files": []}).encode()
    (folder / "manifest.json").write_bytes(manifest)
    (folder / "manifest.sha256").write_text(f"{hashlib.sha256(manifest).hexdigest()}  "
                                            "manifest.json\n")
    (folder / "verdict.json").write_text(json.dumps({"passed": passes,
                                                     "reasons": [] if passes else ["no"]}))
    shutil.copy(device_code.RELEASES_PATH, folder / releases.MANAGER)
    return folder, ("manifest.json", "manifest.sha256", "verdict.json", releases.MANAGER)


def test_release_keep_and_on_release_reach_the_boards_manager(tmp_path: Path) -> None:
    """keep 2, not the manager's default 5: the fourth release leaves two folders (the
    current and the previous); on_release runs for each release made current."""
    python = tmp_path / "python"  # the harness's; a release's check answers its verdict
    python.write_text(f'#!/bin/sh\nif [ "$2" = --check ]; then cat "$(dirname "$1")/'
                      f'verdict.json"; else exec {sys.executable} "$@"; fi\n')
    python.chmod(0o700)
    device = LocalDevice(workdir=tmp_path / "board", python=str(python),
                         on_release='echo "$EDGEFLOW_RELEASE" >> "$1/../../hook.log"')
    os.makedirs(device.workdir)
    connection = connect(device, "pi")
    ids = many_ids(4)
    try:
        for name in ids:
            folder, files = built(tmp_path / "built", name)
            answer = releases.push_and_activate(connection, device, folder, name, files,
                                                ReleaseParams(keep=2), lock_wait=10)
            assert answer["status"] == "released", answer
        assert answer["removed"] == [ids[1]]
        assert sorted(os.listdir(device.workdir / "app" / "releases")) == ids[2:]
        assert (device.workdir / "app" / "hook.log").read_text().split() == ids
        assert releases.status(connection, device)["previous"]["release"] == ids[2]
    finally:
        connection.close()
