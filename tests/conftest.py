"""Shared fixtures: a tiny real project (digits at 16x16, a 2-layer CNN trained for a few
epochs, converted to every format) built once per test session."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

# Before anything imports TensorFlow or Prefect: quiet logs, no telemetry, and a Prefect
# home of the test session's own (its temporary server's database lives there).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary Prefect server needs more than the default 20 s on a busy 2-core box.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="edgeflow-prefect-home-"))
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402

from tasks.core.config import BenchmarkParams, Params  # noqa: E402
from tasks.core.layout import Layout  # noqa: E402
from tests.helpers import fork_safe  # noqa: E402
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
    layout, params = fork_safe(build_tiny_project, tmp_path_factory.mktemp("tiny-project"))
    return TinyProject(layout, params)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Prefect stops its temporary server at interpreter exit and logs it through a
    # handler bound to pytest's already-closed capture stream; drop that noise.
    import logging

    logging.raiseExceptions = False
