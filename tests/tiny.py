"""The tiny real project the tests (and benchmarks/farm.py) train: digits at 16x16, a
2-layer CNN trained for a few epochs, converted to the default formats. Importing this
module has no side effects (tests/conftest.py sets up the test session)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy imports only when a project is built
    from tasks.config import Params
    from tasks.core.layout import Layout

TINY_PARAMS = """\
data: {image_size: [16, 16], calibration_size: 32}
model: {architecture: small_cnn, filters: [8, 16], dropout: 0.1}
train: {epochs: 6, batch_size: 64, learning_rate: 0.01, early_stopping_patience: 3, seed: 42}
optimize: {pruning: []}
quantization: {calibration_samples: 32}
formats: {tflite: [fp32], onnx: [fp32], openvino: [fp32]}
convert: {min_agreement: 0.99}
benchmark: {warmup_runs: 2, warmup_seconds: 0.0, runs: 10, seconds: 0.05, max_seconds: 0.2,
            accuracy_samples: 60, timeout_seconds: 120}
requirements: {min_accuracy: 0.5, max_accuracy_drop: 0.05}
select: {include_emulated: false}
release: {policy: auto, check_images: 20}
"""

TINY_FARM = """\
devices:
  local: {threads: 1}
"""


def write_tiny_config(root: Path, params: str = TINY_PARAMS, farm: str = TINY_FARM) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(params, encoding="utf-8")
    (root / "farm.yaml").write_text(farm, encoding="utf-8")


def build_tiny_project(root: Path) -> tuple[Layout, Params]:
    """prepare -> train -> convert for real in ``root``; returns its layout and params."""
    from tasks.config import load_params
    from tasks.convert import ConvertInputs, convert
    from tasks.core.layout import Layout
    from tasks.prepare import prepare
    from tasks.train import train

    write_tiny_config(root)
    params = load_params(root / "params.yaml")
    layout = Layout(root)
    prepare(params.data, layout.prepared)
    train(params.model, params.train, layout.prepared, layout.base_model, layout.train_metrics.parent)
    convert(params.formats, params.convert, params.quantization,
            params.requirements.max_accuracy_drop,
            ConvertInputs(layout.base_model, None, layout.prepared), layout.variants)
    return layout, params
