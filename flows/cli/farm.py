"""``edgeflow farm probe|setup|trust``: look at, prepare and trust the devices. ``probe``
and ``setup`` print every device's row (:mod:`flows.cli.farm_tables`), then one line
naming the devices that failed, and exit with their failures' class's code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.arguments import FarmFileOption
from flows.cli.exits import exit_for_devices, guarded, refuse
from flows.cli.farm_tables import probe_table, setup_table
from flows.cli.output import console, say
from tasks.core.errors import ConfigError

farm_app = typer.Typer(no_args_is_help=True, help="Look at and prepare the device farm.")


@farm_app.command("probe")
def farm_probe(farm: FarmFileOption = Path("farm.yaml")) -> None:
    """Connect to every device and show what it is and which runtimes it can run."""
    from tasks.config import load_farm
    from tasks.targets.farm_commands import probe_farm

    probes = guarded(lambda: probe_farm(load_farm(farm)))
    console.print(probe_table(farm, probes))
    exit_for_devices({probe.device: probe.failure for probe in probes if probe.failure},
                     "could not be probed")


@farm_app.command("setup")
def farm_setup(devices: Annotated[list[str] | None, typer.Argument(
                   help="devices to set up (one named twice is set up once); default: "
                        "every device with a `setup` section")] = None,
               farm: FarmFileOption = Path("farm.yaml"),
               params: Annotated[Path | None, typer.Option(
                   "--params", help="experiment whose formats say which runtimes a device "
                                    "without `runtimes` needs; default: beside farm.yaml")] = None,
               ) -> None:
    """Make devices ready: a virtualenv in each device's workdir with numpy and its
    runtimes, pinned to this project's versions; for devices without internet the wheels
    are downloaded here for the device's platform and pushed. A second run changes
    nothing and says so."""
    from tasks.config import load_farm, load_params
    from tasks.core.layout import Layout
    from tasks.targets.farm_commands import setup_farm
    from tasks.models.formats import FORMATS

    def run_setup() -> list[Any]:
        inventory = load_farm(farm)
        # An experiment named with --params must exist; the default one beside farm.yaml
        # may not (a farm set up before any experiment).
        experiment = params or farm.resolve().parent / "params.yaml"
        runtimes = (sorted({FORMATS[name].runtime for name in load_params(experiment).formats})
                    if params is not None or experiment.is_file() else None)
        cache = Layout(farm.resolve().parent).state / "wheelhouse"
        return setup_farm(inventory, list(devices or []), runtimes, cache)

    outcomes = guarded(run_setup)
    if not outcomes:
        say(f"{farm}: no device has a `setup` section: nothing to set up")
        raise typer.Exit(0)
    console.print(setup_table(farm, outcomes))
    exit_for_devices({outcome.device: outcome.failure for outcome in outcomes
                      if outcome.failure}, "could not be set up")


def _ssh_device(farm: Path, name: str) -> Any:
    """The SSH device ``name`` of ``farm``: a ConfigError for an unknown name or a
    device of another kind (only SSH devices have host keys to trust)."""
    from tasks.config import SshDevice, load_farm

    devices = load_farm(farm).devices
    if name not in devices:
        raise ConfigError(f"{farm}: no device {name!r} (devices: {', '.join(devices)})")
    if not isinstance(devices[name], SshDevice):
        raise ConfigError(f"{farm}: {name!r} is a {devices[name].transport} device: only ssh "
                          "devices have host keys to trust")
    return devices[name]


@farm_app.command("trust")
def farm_trust(device: Annotated[str, typer.Argument(help="device name in farm.yaml")],
               farm: FarmFileOption = Path("farm.yaml"),
               yes: Annotated[bool, typer.Option("--yes", help="record without asking")] = False,
               replace: Annotated[bool, typer.Option(
                   "--replace", help="replace a recorded key that differs (a re-imaged "
                                     "device)")] = False) -> None:
    """Show a device's SSH host key fingerprint; record it in the farm's known_hosts
    once you confirm it is the device's (compare with `ssh-keygen -lf` on the device)."""
    from tasks.farm.transports import HostKeyRefused
    from tasks.farm.trust import examine, record

    target = guarded(lambda: _ssh_device(farm, device))
    offer = guarded(lambda: examine(target))
    say(f"{device} ({offer.host_pattern}) offers {offer.key.get_name()} key "
        f"{offer.fingerprint}")
    if offer.standing == "trusted":
        say(f"already trusted in {target.known_hosts}: nothing changed")
        raise typer.Exit(0)
    if offer.standing == "changed":
        say(f"this differs from the key recorded in {target.known_hosts} "
            f"({offer.recorded_fingerprint}): the device was re-imaged, or someone is "
            "impersonating it", style="bold red")
        if not replace:
            refuse(HostKeyRefused("host key changed; not replaced (check it on the device, "
                                  "then run again with --replace)"))
    if not yes and not typer.confirm("Is this the device's key? Record it", default=False):
        typer.echo("edgeflow: not trusted: nothing recorded", err=True)
        raise typer.Exit(1)
    record(target, offer)
    say(f"recorded in {target.known_hosts}")


def register(app: typer.Typer) -> None:
    """Add the ``farm`` group to ``app``."""
    app.add_typer(farm_app, name="farm")
