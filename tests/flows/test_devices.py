"""flows/devices.py: one running benchmark per board in Prefect: tags, limits and slots,
with a fake Prefect client recording what it was asked."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from flows import devices


class _Client:
    """Prefect's sync client: the tags that already have a limit; what was done."""

    def __init__(self, existing: dict[str, int]) -> None:
        self.existing, self.done = existing, []

    def __enter__(self) -> "_Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.append("closed")

    def read_concurrency_limit_by_tag(self, tag: str) -> Any:
        from prefect.exceptions import ObjectNotFound

        self.done.append(("read", tag))
        if tag not in self.existing:
            raise ObjectNotFound(http_exc=Exception(tag))
        return SimpleNamespace(tag=tag, concurrency_limit=self.existing[tag])

    def create_concurrency_limit(self, tag: str, concurrency_limit: int) -> None:
        self.done.append(("create", tag, concurrency_limit))

    def read_concurrency_limits(self, limit: int, offset: int) -> list[Any]:
        self.done.append(("list", limit, offset))
        return [SimpleNamespace(tag=tag) for tag in self.existing]

    def reset_concurrency_limit_by_tag(self, tag: str) -> None:
        self.done.append(("reset", tag))


def test_a_devices_tag_is_its_name_after_the_prefix() -> None:
    assert devices.device_tag("pi-5") == "device:pi-5"
    assert devices.DEVICE_LIMIT == 1


def test_only_devices_without_a_limit_get_one_of_one_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.client.orchestration

    client = _Client({"device:pi": 3})
    asked: list[dict[str, Any]] = []
    monkeypatch.setattr(prefect.client.orchestration, "get_client",
                        lambda **kwargs: asked.append(kwargs) or client)
    assert devices.ensure_device_limits(["pi", "jetson"]) == ["device:pi", "device:jetson"]
    assert asked == [{"sync_client": True}]
    assert client.done == [("read", "device:pi"), ("read", "device:jetson"),
                           ("create", "device:jetson", 1), "closed"]


def test_starting_afresh_resets_every_device_limit_and_no_other() -> None:
    client = _Client({"device:pi": 1, "gpu": 1, "devices:x": 1, "device:jetson": 1})
    assert devices.reset_device_slots(client) == ["device:pi", "device:jetson"]
    assert client.done == [("list", 200, 0), ("reset", "device:pi"), ("reset", "device:jetson")]


@pytest.mark.parametrize(("configured", "temporary", "lasting"), [
    (None, None, False), (None, "http://127.0.0.1:5/api", False),
    ("http://127.0.0.1:4200/api", None, True),
    ("http://127.0.0.1:4200/api", "http://127.0.0.1:5/api", True),
    ("http://127.0.0.1:5/api", "http://127.0.0.1:5/api", False)])
def test_a_lasting_server_is_a_configured_one_that_this_process_did_not_start(
        monkeypatch: pytest.MonkeyPatch, configured: str | None, temporary: str | None,
        lasting: bool) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows import server

    monkeypatch.setattr(server, "temporary_api_url", lambda: temporary)
    with temporary_settings({PREFECT_API_URL: configured} if configured else {},
                            restore_defaults=set() if configured else {PREFECT_API_URL}):
        assert devices.on_lasting_server() is lasting
