"""A real SSH device (OpenSSH on loopback): benchmark over Fabric, host keys verified
against the farm's known_hosts, key authentication only."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tasks.config import SshDevice
from tests.helpers import assert_device_tidy, bench_device, records, ssh_device
from tests.sshd import SshServer, keygen


def _records(tiny_project: Any, device: SshDevice, out: Path) -> dict[str, dict[str, Any]]:
    return records(bench_device(tiny_project, "pi", device, out))


def test_benchmark_over_ssh(tiny_project, ssh_server: SshServer, tmp_path: Path) -> None:
    records = _records(tiny_project, ssh_device(ssh_server, tmp_path / "remote"),
                       tmp_path / "results")
    for name in ("tflite-fp32", "onnx-fp32"):
        assert records[name]["status"] == "ok", records[name]["error"]
        assert records[name]["harness"]["latency_ms"]["p50"] > 0
        assert records[name]["device_facts"]["arch"]
    assert records["openvino-fp32"]["status"] == "skipped"
    assert_device_tidy(tmp_path / "remote")


def test_unknown_host_key_is_refused_with_how_to_trust(tiny_project, ssh_server: SshServer,
                                                       tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    records = _records(tiny_project, ssh_device(ssh_server, tmp_path / "remote", known_hosts=empty),
                       tmp_path / "results")
    for record in records.values():
        assert record["status"] == "failed"
        assert "is not in" in record["error"] and "edgeflow farm trust pi" in record["error"]
    assert not (tmp_path / "remote").exists(), "nothing ran on an untrusted host"
    assert empty.read_text() == "", "nothing was added to known_hosts"


def test_changed_host_key_is_refused(tiny_project, ssh_server: SshServer, tmp_path: Path) -> None:
    keygen(tmp_path / "impostor")
    impostor = " ".join((tmp_path / "impostor.pub").read_text().split()[:2])
    known = tmp_path / "known_hosts"
    known.write_text(f"[{ssh_server.host}]:{ssh_server.port} {impostor}\n")
    records = _records(tiny_project, ssh_device(ssh_server, tmp_path / "remote", known_hosts=known),
                       tmp_path / "results")
    assert all("changed" in record["error"] for record in records.values())


def test_wrong_client_key_is_refused(tiny_project, ssh_server: SshServer, tmp_path: Path) -> None:
    keygen(tmp_path / "stranger")
    stranger = ssh_device(ssh_server, tmp_path / "remote", key_file=tmp_path / "stranger")
    records = _records(tiny_project, stranger, tmp_path / "results")
    for record in records.values():
        assert record["status"] == "failed"
        assert "Authentication" in record["error"] or "auth" in record["error"].lower()


def test_farm_probe_reports_each_device_and_survives_a_bad_one(ssh_server: SshServer,
                                                               tmp_path: Path) -> None:
    import os
    import subprocess

    farm = tmp_path / "farm.yaml"
    farm.write_text(f"""\
devices:
  pi:
    transport: ssh
    host: {ssh_server.host}
    port: {ssh_server.port}
    user: {ssh_server.user}
    key_file: {ssh_server.client_key}
    known_hosts: {ssh_server.known_hosts}
    python: {sys.executable}
    workdir: {tmp_path / 'remote'}
  ghost:
    transport: ssh
    host: 127.0.0.1
    port: 1
    user: nobody
    key_file: {ssh_server.client_key}
    known_hosts: {ssh_server.known_hosts}
    connect_timeout: 2
    connect_attempts: 1
  esp: {{transport: mcu, flash_kb: 4096, ram_kb: 512}}
""")
    from tasks.config import load_farm
    from tasks.targets.farm_commands import probe_farm

    probes = {probe.device: probe for probe in probe_farm(load_farm(farm))}
    assert probes["pi"].reachable and probes["pi"].facts["cores"] >= 1
    assert probes["pi"].facts["memory_mb"] > 0
    assert {"tflite", "onnxruntime", "openvino"} <= set(probes["pi"].runtimes)
    assert not probes["ghost"].reachable and probes["ghost"].error
    assert not probes["esp"].reachable and "microcontroller" in probes["esp"].error
    cli = subprocess.run([str(Path(sys.executable).parent / "edgeflow"), "farm", "probe",
                          "--farm", str(farm)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "250"}, check=False)
    assert cli.returncode == 1, cli.stderr  # ghost is unreachable
    assert "pi" in cli.stdout and "onnxruntime" in cli.stdout and "Traceback" not in cli.stderr


def test_the_users_ssh_config_is_never_read(ssh_server: SshServer, tmp_path: Path,
                                            monkeypatch) -> None:
    """A ~/.ssh/config that would route every host elsewhere, forward the agent and add
    keys changes nothing: a farm device is reached exactly as farm.yaml says."""
    from tasks.farm.transports import SshConnection
    from tasks.farm.probe import probe_one

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        "Host *\n  ProxyCommand false\n  ForwardAgent yes\n  Port 1\n  User nobody\n"
        f"  IdentityFile {tmp_path / 'other_key'}\n")
    monkeypatch.setenv("HOME", str(home))
    device = ssh_device(ssh_server, tmp_path / "remote")
    connection = SshConnection(device, "pi")
    fabric = connection._fabric
    assert (fabric.port, fabric.user, fabric.forward_agent, fabric.gateway) == (
        ssh_server.port, ssh_server.user, False, None)
    assert fabric.connect_kwargs["key_filename"] == [str(ssh_server.client_key)]
    # Only the device's key: no agent, no ~/.ssh/id_* tried on the board.
    assert (fabric.connect_kwargs["look_for_keys"], fabric.connect_kwargs["allow_agent"]) == (
        False, False)
    assert fabric.connect_timeout == device.connect_timeout
    assert probe_one("pi", device).reachable


def test_the_users_own_known_hosts_is_never_trusted(ssh_server: SshServer, tmp_path: Path,
                                                   monkeypatch) -> None:
    """Only the farm's known_hosts vouches for a board: a key this user once accepted in
    ~/.ssh/known_hosts (for another purpose, perhaps without checking it) does not."""
    import pytest

    from tasks.farm.transports import HostKeyRefused, SshConnection
    from tasks.farm.trust import examine

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(ssh_server.known_hosts.read_text())
    monkeypatch.setenv("HOME", str(home))
    farm_known_hosts = tmp_path / "known_hosts"
    farm_known_hosts.write_text("")
    device = ssh_device(ssh_server, tmp_path / "remote", known_hosts=farm_known_hosts)

    with pytest.raises(HostKeyRefused, match=f"is not in {farm_known_hosts}"):
        SshConnection(device, "pi").run("true")
    assert examine(device).standing == "unknown"
    assert farm_known_hosts.read_text() == "" and not (tmp_path / "remote").exists()


def test_the_loopback_example_farm_starts_runs_and_stops(tmp_path: Path) -> None:
    """`python -m tests.sshd up/down`: the documented farm to try without boards."""
    import os

    from tasks.config import load_farm
    from tasks.targets.farm_commands import probe_farm
    from tests.sshd import main, sshd_available

    if not sshd_available():
        import pytest
        pytest.skip("OpenSSH server not installed")
    assert main(["up", "2", str(tmp_path / "farm")]) == 0
    try:
        farm = load_farm(tmp_path / "farm" / "farm.yaml")
        assert [probe.reachable for probe in probe_farm(farm)] == [True, True]
        pids = [entry["pid"] for entry in json.loads((tmp_path / "farm" / "servers.json").read_text())]
    finally:
        assert main(["down", str(tmp_path / "farm")]) == 0
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), "a device was left running"
