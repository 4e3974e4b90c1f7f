"""Prefect's side of "one benchmark per board at a time".

On a lasting Prefect server (``edgeflow serve``, any PREFECT_API_URL: where deployments
run), each device's benchmark task that will run carries the tag :func:`device_tag`
(``device:<name>``; one that will come from the cache touches no board and takes no
slot: Prefect's slot costs about 2 s, its lease-renewal thread's join) and Prefect allows one running task per such tag
(:func:`ensure_device_limits`): two flow runs (the nightly deployment and an on-change
run, two experiments on one farm) queue for a board in Prefect before they would queue
on the board's own lock (the ``flock`` in its workdir, which still guards against runs
on other servers).

Not on a CLI run's temporary server: a slot is held under a lease that only a server's
background services expire, and a temporary server runs none; its database is shared
(``PREFECT_HOME``), so a run killed holding a slot would block every later benchmark of
that board. A lasting server expires a dead holder's lease within a minute; the slots
its leases held are reset when ``edgeflow serve`` starts it afresh (leases are kept in
its memory: :func:`reset_device_slots`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

DEVICE_LIMIT = 1
TAG_PREFIX = "device:"


def device_tag(device: str) -> str:
    return f"{TAG_PREFIX}{device}"


def on_lasting_server() -> bool:
    """Whether the current Prefect API is a lasting server: configured, and not the
    temporary one this process started (:mod:`flows.server`)."""
    from prefect.settings import PREFECT_API_URL

    from flows.server import temporary_api_url

    url = PREFECT_API_URL.value()
    return bool(url) and url != temporary_api_url()


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


def reset_device_slots(client: Any) -> list[str]:
    """Free every slot of every device limit (``client``: a sync Prefect client of a
    server that was just started, so no lease of a running task survives in it)."""
    tags = [limit.tag for limit in client.read_concurrency_limits(limit=200, offset=0)
            if limit.tag.startswith(TAG_PREFIX)]
    for tag in tags:
        client.reset_concurrency_limit_by_tag(tag)
    return tags
