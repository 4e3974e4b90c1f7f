"""What the farm commands do over every target: ``edgeflow farm probe``
(:func:`probe_farm`) and ``edgeflow farm setup`` (:func:`setup_farm`).

Only the CLI imports this module, never a step: a step's code closure (its cache key)
stays free of the virtualenv setup, so editing it re-runs no step.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tasks.config import Farm, check_key_files
from tasks.core.errors import ConfigError
from tasks.farm.probe import DeviceProbe
from tasks.farm.setup import SetupOutcome, setup_devices
from tasks.targets import target_of


def probe_farm(farm: Farm) -> list[DeviceProbe]:
    """Probe every device, at most farm.yaml's ``max_parallel`` at once; results in
    farm.yaml order. A key file that cannot be used is a ConfigError before any device
    is contacted."""
    check_key_files(farm)
    targets = [target_of(name, entry) for name, entry in farm.devices.items()]
    width = max(1, min(farm.parallelism.boards, len(targets)))
    with ThreadPoolExecutor(max_workers=width) as pool:
        futures = [pool.submit(target.probe) for target in targets]
        return [future.result() for future in futures]


def setup_farm(farm: Farm, names: list[str], experiment_runtimes: list[str] | None,
               cache_root: Path) -> list[SetupOutcome]:
    """Set up the named devices (all with a ``setup`` section when none is named), at
    most farm.yaml's ``max_parallel`` at once; results in the order first asked, one per
    device however often named."""
    managed = {name: target_of(name, entry).managed_setup()
               for name, entry in farm.devices.items()}
    if not names:
        names = [name for name, entry in managed.items() if entry is not None]
    # Once each: two setups at once on one board would race over its virtualenv.
    names = list(dict.fromkeys(names))
    for name in names:
        if name not in farm.devices:
            raise ConfigError(f"no device {name!r} in the farm (devices: {', '.join(farm.devices)})")
        if managed[name] is None:
            raise ConfigError(f"device {name!r} has no `setup` section in farm.yaml: nothing to "
                              "set up (add `setup: {}` to let edgeflow manage its virtualenv)")
    check_key_files(farm, names)
    return setup_devices({name: entry for name in names if (entry := managed[name]) is not None},
                         experiment_runtimes, cache_root, farm.parallelism.boards)
