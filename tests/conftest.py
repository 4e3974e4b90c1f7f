"""Shared fixtures: a tiny real project (digits at 16x16, a 2-layer CNN trained for a few
epochs, converted to every format) built once per test session."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Before anything imports TensorFlow or Prefect: quiet logs, no telemetry, and a Prefect
# home of the test session's own (its temporary server's database lives there).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary Prefect server needs more than the default 20 s on a busy 2-core box.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="edgeflow-prefect-home-"))
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402

from tasks.config import BenchmarkParams, Params  # noqa: E402
from tasks.layout import Layout  # noqa: E402

TINY_PARAMS = """\
data: {image_size: [16, 16], calibration_size: 32}
model: {architecture: small_cnn, filters: [8, 16], dropout: 0.1}
train: {epochs: 6, batch_size: 64, learning_rate: 0.01, early_stopping_patience: 3, seed: 42}
optimize: {pruning: []}
quantization: {calibration_samples: 32}
formats: {tflite: [fp32], onnx: [fp32], openvino: [fp32]}
convert: {min_agreement: 0.99}
benchmark: {warmup_runs: 2, warmup_seconds: 0.0, runs: 10, seconds: 0.05,
            accuracy_samples: 60, timeout_seconds: 120}
requirements: {min_accuracy: 0.5, max_accuracy_drop: 0.05}
"""

TINY_FARM = """\
devices:
  local: {threads: 1}
"""


@dataclass(frozen=True)
class TinyProject:
    layout: Layout
    params: Params

    @property
    def quick_benchmark(self) -> BenchmarkParams:
        return self.params.benchmark


def write_tiny_config(root: Path, params: str = TINY_PARAMS, farm: str = TINY_FARM) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(params, encoding="utf-8")
    (root / "farm.yaml").write_text(farm, encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> TinyProject:
    """prepare -> train -> convert run for real once; tests must not modify its files."""
    from tasks.config import load_params
    from tasks.convert import ConvertInputs, convert
    from tasks.prepare import prepare
    from tasks.train import train

    root = tmp_path_factory.mktemp("tiny-project")
    write_tiny_config(root)
    params = load_params(root / "params.yaml")
    layout = Layout(root)
    prepare(params.data, layout.prepared)
    train(params.model, params.train, layout.prepared, layout.base_model, layout.train_metrics.parent)
    convert(params.formats, params.convert, params.quantization,
            params.requirements.max_accuracy_drop,
            ConvertInputs(layout.base_model, None, layout.prepared), layout.variants)
    return TinyProject(layout, params)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Prefect stops its temporary server at interpreter exit and logs it through a
    # handler bound to pytest's already-closed capture stream; drop that noise.
    import logging

    logging.raiseExceptions = False
