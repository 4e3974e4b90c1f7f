"""Prefect's side of "one benchmark per board at a time".

Each device's benchmark task carries the tag :func:`device_tag` (``device:<name>``) and
Prefect allows one running task per such tag (:func:`ensure_device_limits`): two flow
runs (the nightly deployment and an on-change run, two experiments on one farm) queue
for a board in Prefect before they would queue on the board's own lock (the ``flock``
in its workdir, which still guards against runs on other Prefect servers).
"""

from __future__ import annotations

from collections.abc import Iterable

DEVICE_LIMIT = 1


def device_tag(device: str) -> str:
    return f"device:{device}"


def ensure_device_limits(devices: Iterable[str]) -> list[str]:
    """Create the tag concurrency limit of each device on the current Prefect API when
    it has none (a limit someone set differently is left as it is); returns the tags."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    tags = [device_tag(device) for device in devices]
    with get_client(sync_client=True) as client:
        for tag in tags:
            try:
                client.read_concurrency_limit_by_tag(tag)
            except ObjectNotFound:
                client.create_concurrency_limit(tag=tag, concurrency_limit=DEVICE_LIMIT)
    return tags
