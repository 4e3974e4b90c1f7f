"""Step train: a real (tiny) training run, the architecture registry, failure modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.architectures import ARCHITECTURES, MobileNetV2Options, SmallCNNOptions, build_model
from tasks.errors import StepError
from tasks.files import read_json


def test_training_writes_model_reference_and_metrics(tiny_project) -> None:
    layout = tiny_project.layout
    metrics = read_json(layout.train_metrics)
    assert 0.3 < metrics["test_accuracy"] <= 1.0  # ten classes: chance is 0.1
    assert 1 <= metrics["epochs_run"] <= tiny_project.params.train.epochs
    assert metrics["architecture"] == "small_cnn" and metrics["parameters"] > 0
    assert (layout.base_model / "model.keras").is_file()
    assert (layout.base_model / "saved_model" / "saved_model.pb").is_file()
    history = read_json(layout.train_metrics.with_name("train_history.json"))
    assert [row["epoch"] for row in history] == list(range(1, metrics["epochs_run"] + 1))
    assert {"loss", "accuracy", "val_accuracy"} <= set(history[0])
    reference = read_json(layout.base_model / "reference.json")["test_correct"]
    assert len(reference) == read_json(layout.prepared / "meta.json")["counts"]["test"]
    assert np.mean(reference) == pytest.approx(metrics["test_accuracy"])


def test_saved_model_reproduces_the_keras_logits(tiny_project) -> None:
    import keras

    layout = tiny_project.layout
    with np.load(layout.prepared / "test.npz") as data:
        images = data["x"][:16]
    model = keras.models.load_model(layout.base_model / "model.keras", compile=False)
    exported = keras.layers.TFSMLayer(str(layout.base_model / "saved_model"),
                                      call_endpoint="serve")
    np.testing.assert_allclose(model.predict(images, verbose=0), exported(images).numpy(),
                               atol=1e-5)


@pytest.mark.parametrize("options", [SmallCNNOptions(), MobileNetV2Options()],
                         ids=lambda options: options.architecture)
def test_every_architecture_builds_a_logits_model(options) -> None:
    model = build_model(options, (32, 32, 1), 7)
    assert model.output_shape == (None, 7)
    # logits, not probabilities: the last layer has no softmax
    assert model.layers[-1].get_config().get("activation") == "linear"


def test_width_multiplier_scales_mobilenet() -> None:
    narrow = build_model(MobileNetV2Options(width_multiplier=0.25), (32, 32, 3), 10)
    wide = build_model(MobileNetV2Options(width_multiplier=1.0), (32, 32, 3), 10)
    assert narrow.count_params() * 3 < wide.count_params()
    assert any(layer.__class__.__name__ == "DepthwiseConv2D" for layer in wide.layers)


def test_registry_names_match_options() -> None:
    for name, architecture in ARCHITECTURES.items():
        assert architecture.options().architecture == name


def test_training_without_prepared_data_is_a_step_error(tmp_path: Path) -> None:
    from tasks.config import TrainParams
    from tasks.train import train

    with pytest.raises(StepError, match="run the prepare step first"):
        train(SmallCNNOptions(), TrainParams(epochs=1), tmp_path / "nothing", tmp_path / "out",
              tmp_path / "metrics")
    assert not (tmp_path / "out").exists()
