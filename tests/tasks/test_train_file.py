"""train and convert from a model you bring: each source kind (the tiny project's own
model as a .keras file, a SavedModel, an NHWC ONNX export with an open batch, and an
NCHW ONNX one standing in for a PyTorch export) is checked, evaluated and converted to
every format (TFLite through onnx2tf for an ONNX model), each variant agreeing with its
source in the source's runtime. Fine-tuning a Keras file on a folder of
another class count replaces its head."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.convert import ConvertInputs, convert
from tasks.config import ConvertParams, QuantizationParams, TrainParams
from tasks.core.errors import TrainingError
from tasks.models.model_file import FineTuneOptions, ModelFileOptions
from tasks.train import train
from tests.image_folders import build_photo_folder
from tests.model_files import bring, linear_onnx

# What each kind converts to here, and what it skips.
FORMATS = {"keras": {"onnx": ["fp32", "int8-qdq"], "openvino": ["int8"]},
           "saved_model": {"tflite": ["fp32"], "onnx": ["fp32"]},
           "onnx": {"tflite": ["fp32"], "onnx": ["fp32", "int8-qdq"], "openvino": ["fp32", "int8"]},
           "nchw": {"tflite": ["fp32"], "onnx": ["fp32", "int8-qdq"], "openvino": ["fp32", "int8"]}}
# A TFLite variant of an ONNX source comes from onnx2tf, and reads NHWC whatever the
# source's layout (an NHWC source keeps its input shape).
FROM_ONNX2TF = {"onnx": {"tflite-fp32"}, "nchw": {"tflite-fp32"}}
QUANTISED = ("onnx-int8-qdq", "openvino-int8")


@pytest.fixture(scope="module")
def files(tiny_project: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    layout = tiny_project.layout
    return bring(layout.base_model, layout.variants / "onnx-fp32" / "model.onnx",
                 tmp_path_factory.mktemp("brought"))


@pytest.fixture(scope="module")
def converted(tiny_project: Any, files: dict[str, Path],
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Per kind: train's result, source.json, train.json and the variants by name."""
    layout, done = tiny_project.layout, {}
    for kind, formats in FORMATS.items():
        root = tmp_path_factory.mktemp(kind)
        result = train(ModelFileOptions(path=files[kind]), TrainParams(), layout.prepared,
                       root / "base", root / "metrics")
        index = json.loads(convert(formats, ConvertParams(check_samples=120),
                                   QuantizationParams(calibration_samples=32), 0.05,
                                   ConvertInputs(root / "base", None, layout.prepared),
                                   root / "variants").read_text())
        done[kind] = {"result": result, "root": root,
                      "source": json.loads((root / "base" / "source.json").read_text()),
                      "metrics": json.loads((root / "metrics" / "train.json").read_text()),
                      "variants": {variant["name"]: variant for variant in index["variants"]}}
    return done


@pytest.mark.parametrize("kind", list(FORMATS))
def test_each_source_kind_is_evaluated_and_converted_to_what_it_allows(
        tiny_project: Any, converted: dict[str, dict[str, Any]], kind: str) -> None:
    done = converted[kind]
    own = json.loads(tiny_project.layout.train_metrics.read_text())["test_accuracy"]
    # The same network as the tiny project's: the same test accuracy, to an image.
    assert abs(done["result"].test_accuracy - own) <= 1 / 360 + 1e-9
    described = done["source"]
    assert described["kind"] == {"nchw": "onnx"}.get(kind, kind)
    assert described["input"]["layout"] == ("NCHW" if kind == "nchw" else "NHWC")
    assert described["input"]["shape"] == ([1, 1, 16, 16] if kind == "nchw" else [1, 16, 16, 1])
    assert done["metrics"]["architecture"] == f"file ({described['kind']})"
    assert done["metrics"]["epochs_run"] == 0 and done["metrics"]["parameters"] > 1000
    variants = done["variants"]
    assert set(variants) == {f"{fmt}-{precision}" for fmt, precisions in FORMATS[kind].items()
                             for precision in precisions}
    for name, variant in variants.items():
        if name in FROM_ONNX2TF.get(kind, set()):
            assert variant["details"]["converter"].startswith("onnx2tf "), name
            assert variant["spec"]["input"]["layout"] == "NHWC"
            assert variant["spec"]["input"]["shape"] == [1, 16, 16, 1]
        else:
            assert variant["spec"]["input"]["layout"] == described["input"]["layout"]
            assert variant["spec"]["input"]["shape"] == described["input"]["shape"]
        if name not in QUANTISED:
            assert variant["status"] == "ok" and variant["check"]["passed"], variant["reason"]
            assert variant["check"]["agreement"] >= 0.99


@pytest.mark.parametrize("kind", list(FORMATS))
def test_each_kinds_variants_are_benchmarked_in_their_own_layout(
        converted: dict[str, dict[str, Any]], tiny_project: Any, tmp_path: Path,
        kind: str) -> None:
    """The harness on the local device measures every variant convert produced from
    each kind, fed in its layout: the accuracy it finds on the first 60 test images is
    the one convert's check found there (the same runtime, the same images)."""
    from tasks.benchmark import benchmark_device
    from tasks.config import BenchmarkParams, LocalDevice

    params = BenchmarkParams(warmup_runs=2, warmup_seconds=0.0, runs=10, seconds=0.01,
                             max_seconds=0.05, accuracy_samples=120, timeout_seconds=120)
    run = benchmark_device("local", LocalDevice(workdir=tmp_path / "device"), params,
                           converted[kind]["root"] / "variants", tiny_project.layout.prepared,
                           tmp_path / "results")
    measured = {path.stem: json.loads(path.read_text()) for path in run.results}
    for name, variant in converted[kind]["variants"].items():
        record = measured[name]
        if variant["status"] != "ok":
            assert record["status"] == variant["status"], name
            continue
        assert record["status"] == "ok", record["error"]
        harness = record["harness"]
        assert harness["latency_ms"]["p50"] > 0 and harness["accuracy_samples"] == 120
        assert harness["accuracy"] == pytest.approx(variant["check"]["accuracy"]), name


def test_quantising_an_onnx_source_gives_what_quantising_its_keras_model_gives(
        converted: dict[str, dict[str, Any]]) -> None:
    """The same network from three sources, quantised on the same images: the same
    agreement with its source (to an image in 120), whatever the layout."""
    for name in QUANTISED:
        agreements = [converted[kind]["variants"][name]["check"]["agreement"]
                      for kind in ("keras", "onnx", "nchw")]
        assert max(agreements) - min(agreements) <= 1 / 120 + 1e-9, (name, agreements)
        statuses = {converted[kind]["variants"][name]["status"] for kind in ("keras", "onnx",
                                                                               "nchw")}
        assert len(statuses) == 1, (name, statuses)


@pytest.mark.parametrize("recipes", [[], ["pruned50"]])
def test_optimize_skips_every_recipe_of_an_onnx_source_with_the_reason(
        tiny_project: Any, converted: dict[str, dict[str, Any]], tmp_path: Path,
        recipes: list[str]) -> None:
    from tasks.config import OptimizeParams
    from tasks.optimize import optimize

    params = OptimizeParams(pruning=[{"name": name, "method": "magnitude", "sparsity": 0.5}
                                     for name in recipes])
    out = optimize(params, converted["nchw"]["root"] / "base", tiny_project.layout.prepared,
                   tmp_path / "pruned")
    assert json.loads((out / "index.json").read_text()) == {"sources": [], "skipped": [
        {"name": name, "reason": "pruning needs a Keras model; the source is onnx "
                                 "(model_nchw.onnx)"} for name in recipes]}


def test_the_shipped_params_with_a_keras_file_skip_structured_pruning_with_the_reason(
        tiny_project: Any, converted: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """params.yaml as shipped (a magnitude and a structured recipe), the model replaced by
    a file: the params load, the magnitude recipe prunes the Keras file and the structured
    one, which knows only edgeflow's own architectures, is skipped with the reason."""
    import re

    from tasks.config import load_params
    from tasks.optimize import optimize

    shipped = (Path(__file__).resolve().parents[2] / "params.yaml").read_text(encoding="utf-8")
    brought, replaced = re.subn(r"(?ms)^model:\n.*?(?=^train:)",
                                "model: {source: file, path: model.keras}\n\n", shipped)
    assert replaced == 1
    (tmp_path / "params.yaml").write_text(brought, encoding="utf-8")
    params = load_params(tmp_path / "params.yaml")
    methods = [(recipe.name, recipe.method) for recipe in params.optimize.pruning]
    assert methods == [("pruned50", "magnitude"), ("slim50", "structured")]
    pruning = [recipe.model_copy(update={"epochs": 1}) for recipe in params.optimize.pruning]
    out = optimize(params.optimize.model_copy(update={"pruning": pruning}),
                   converted["keras"]["root"] / "base", tiny_project.layout.prepared,
                   tmp_path / "pruned")
    index = json.loads((out / "index.json").read_text())
    assert [source["name"] for source in index["sources"]] == ["pruned50"]
    assert index["skipped"] == [{"name": "slim50", "reason": (
        "structured pruning supports small_cnn; the source is a model you brought "
        "(model.keras): use method 'magnitude'")}]
    assert (out / "pruned50" / "model.keras").is_file() and not (out / "slim50").exists()


def test_an_opset_7_onnx_model_loses_only_the_variant_its_quantiser_cannot_make(
        tiny_project: Any, tmp_path: Path) -> None:
    """An opset-7 ONNX file passes train; ONNX Runtime's QDQ quantiser makes an invalid
    graph of it: that variant is a ``failed`` row with the error, the others convert,
    and benchmark reports it as convert's failure beside the measured ones."""
    from tasks.benchmark import benchmark_device
    from tasks.config import BenchmarkParams, LocalDevice

    layout = tiny_project.layout
    model = linear_onnx(tmp_path / "old.onnx", 7)
    train(ModelFileOptions(path=model), TrainParams(), layout.prepared, tmp_path / "base",
          tmp_path / "metrics")
    index = json.loads(convert({"onnx": ["fp32", "int8-qdq"], "openvino": ["fp32"]},
                               ConvertParams(check_samples=60),
                               QuantizationParams(calibration_samples=16), 0.05,
                               ConvertInputs(tmp_path / "base", None, layout.prepared),
                               tmp_path / "variants").read_text())
    variants = {variant["name"]: variant for variant in index["variants"]}
    assert {name: variant["status"] for name, variant in variants.items()} == {
        "onnx-fp32": "ok", "onnx-int8-qdq": "failed", "openvino-fp32": "ok"}
    reason = variants["onnx-int8-qdq"]["reason"]
    assert reason.startswith("export failed: ") and "INVALID_GRAPH" in reason, reason
    params = BenchmarkParams(warmup_runs=1, warmup_seconds=0.0, runs=5, seconds=0.01,
                             max_seconds=0.05, accuracy_samples=20, timeout_seconds=120)
    run = benchmark_device("local", LocalDevice(workdir=tmp_path / "device"), params,
                           tmp_path / "variants", layout.prepared, tmp_path / "results")
    records = {path.stem: json.loads(path.read_text()) for path in run.results}
    assert {name: record["status"] for name, record in records.items()} == {
        "onnx-fp32": "ok", "onnx-int8-qdq": "failed", "openvino-fp32": "ok"}
    assert records["onnx-int8-qdq"]["error"].startswith(f"failed by convert: {reason[:100]}")


def test_an_onnx_model_that_takes_other_images_is_refused_and_nothing_written(
        tiny_project: Any, files: dict[str, Path], tmp_path: Path) -> None:
    from tests.tasks.test_model_file import onnx_graph

    big = onnx_graph(tmp_path / "big.onnx", [[1, 3, 224, 224]], [[1, 1000]])
    with pytest.raises(TrainingError) as refused:
        train(ModelFileOptions(path=big), TrainParams(), tiny_project.layout.prepared,
              tmp_path / "base", tmp_path / "metrics")
    assert str(refused.value) == (
        "train: big.onnx takes 224x224 rgb images (NCHW); the data is 16x16 grayscale: set "
        "data.image_size and data.color to match the model")
    assert not (tmp_path / "base").exists() and not (tmp_path / "metrics").exists()
    with pytest.raises(TrainingError, match=r"^train: train.fine_tune needs a .keras model; "
                                            r"model_nchw.onnx is an ONNX model$"):
        train(ModelFileOptions(path=files["nchw"]),
              TrainParams(fine_tune=FineTuneOptions(epochs=1)), tiny_project.layout.prepared,
              tmp_path / "base", tmp_path / "metrics")


def test_fine_tuning_a_keras_file_on_three_classes_replaces_its_head(
        files: dict[str, Path], tmp_path: Path) -> None:
    from tasks.config import DataParams
    from tasks.core.contracts.prepared import load_split
    from tasks.models import batch_norm
    from tasks.prepare import prepare

    folder = build_photo_folder(tmp_path / "photos", {"china": 60, "flower": 60, "hopper": 60})
    prepared = prepare(DataParams(source="folder", folder=folder, image_size=(16, 16),
                                  color="grayscale", calibration_size=16), tmp_path / "prepared")
    result = train(ModelFileOptions(path=files["keras"]),
                   TrainParams(batch_size=16, fine_tune=FineTuneOptions(
                       epochs=20, learning_rate=0.01, freeze_base=True)),
                   prepared, tmp_path / "base", tmp_path / "metrics")
    import keras

    tuned = keras.models.load_model(tmp_path / "base" / "model.keras", compile=False)
    assert tuned.outputs[0].shape[-1] == 3 and tuned.layers[-1].name == "edgeflow_head"
    history = json.loads((tmp_path / "metrics" / "train_history.json").read_text())
    metrics = json.loads((tmp_path / "metrics" / "train.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, result.epochs_run + 1))
    # The best epoch (val accuracy, judged in inference mode) is the model written.
    assert 1 <= result.best_epoch == metrics["best_epoch"] <= result.epochs_run <= 20
    best = max(row["val_accuracy"] for row in history)
    assert history[result.best_epoch - 1]["val_accuracy"] == best
    assert metrics["val_accuracy"] == pytest.approx(best, abs=1e-9)
    # Frozen base, new head: only the head's weights moved; the base's batch-norm
    # statistics are re-estimated on the folder's train images.
    original = keras.models.load_model(files["keras"], compile=False)
    for before, after in zip(original.layers[:-1], tuned.layers[:-1]):
        for old, new in zip(before.weights, after.weights):
            if "moving" not in old.path:
                np.testing.assert_array_equal(old.numpy(), new.numpy())
    assert batch_norm.reestimate(original, load_split(prepared, "train")[0], 16) == 2
    for layer in batch_norm.batch_norm_layers(original):
        for name in ("moving_mean", "moving_variance"):
            np.testing.assert_allclose(getattr(tuned.get_layer(layer.name), name).numpy(),
                                       getattr(layer, name).numpy(), rtol=1e-6, atol=1e-7)
    # Three photographs, told apart well above chance (1/3) by a head on digit features.
    assert result.test_accuracy > 0.5, result.describe()


def test_a_fine_tune_can_keep_the_files_batch_norm_statistics(
        tiny_project: Any, files: dict[str, Path], tmp_path: Path) -> None:
    """``batch_norm: keep`` with a frozen base: every weight of the base, its moving
    statistics included, is the file's."""
    import keras

    train(ModelFileOptions(path=files["keras"]),
          TrainParams(batch_size=64, fine_tune=FineTuneOptions(
              epochs=1, learning_rate=0.01, batch_norm="keep", feature_layer="dropout")),
          tiny_project.layout.prepared, tmp_path / "base", tmp_path / "metrics")
    tuned = keras.models.load_model(tmp_path / "base" / "model.keras", compile=False)
    # A named feature layer gets a new head even though the file's has the data's 10.
    assert [layer.name for layer in tuned.layers][-2:] == ["dropout", "edgeflow_head"]
    original = keras.models.load_model(files["keras"], compile=False)
    for before in original.layers[:-1]:
        for old, new in zip(before.weights, tuned.get_layer(before.name).weights):
            np.testing.assert_array_equal(old.numpy(), new.numpy())


def test_a_fine_tune_that_does_not_learn_is_refused_and_nothing_written(
        files: dict[str, Path], tmp_path: Path) -> None:
    from tasks.config import DataParams
    from tasks.prepare import prepare

    folder = build_photo_folder(tmp_path / "photos", {"china": 40, "flower": 40, "hopper": 40},
                                shuffle_labels=True)
    prepared = prepare(DataParams(source="folder", folder=folder, image_size=(16, 16),
                                  color="grayscale", calibration_size=16), tmp_path / "prepared")
    with pytest.raises(TrainingError, match=r"^train: the model did not learn: validation "
                                            r"accuracy .* is not clearly above the "
                                            r"majority-class rate"):
        train(ModelFileOptions(path=files["keras"]),
              TrainParams(batch_size=16, early_stopping_patience=2,
                          fine_tune=FineTuneOptions(epochs=4, learning_rate=0.01)),
              prepared, tmp_path / "base", tmp_path / "metrics")
    assert not (tmp_path / "base").exists() and not (tmp_path / "metrics").exists()


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A keras.applications MobileNetV3Small (10 classes, trained for two steps) and a
    folder of three photo classes at its 32x32 RGB input, prepared."""
    from tasks.config import DataParams
    from tasks.prepare import prepare
    from tests.model_files import mobilenet_v3

    root = tmp_path_factory.mktemp("mobilenet")
    folder = build_photo_folder(root / "photos", {"china": 60, "flower": 60, "hopper": 60})
    prepared = prepare(DataParams(source="folder", folder=folder, image_size=(32, 32),
                                  color="rgb", calibration_size=16), root / "prepared")
    return mobilenet_v3(root / "mnv3.keras"), prepared


def test_fine_tuning_a_mobilenet_puts_the_new_head_on_its_features(
        mobilenet: tuple[Path, Path], tmp_path: Path) -> None:
    """MobileNetV3's classifier head is a 1x1 conv to its 10 classes, a flatten and a
    softmax: the new head reads the 1024 features before them, not the flattened old
    scores (a head on those stayed at the majority rate), and the fine-tuned model
    learned (train refuses one that did not)."""
    import keras

    model_file, prepared = mobilenet
    result = train(ModelFileOptions(path=model_file),
                   TrainParams(batch_size=16, fine_tune=FineTuneOptions(epochs=4,
                                                                        learning_rate=0.01)),
                   prepared, tmp_path / "base", tmp_path / "metrics")
    tuned = keras.models.load_model(tmp_path / "base" / "model.keras", compile=False)
    original = keras.models.load_model(model_file, compile=False)
    assert tuned.get_layer("edgeflow_head").kernel.shape == (1024, 3)
    old_head = {layer.name for layer in original.layers[-3:]}  # logits conv, flatten, softmax
    assert not old_head & {layer.name for layer in tuned.layers}
    metrics = json.loads((tmp_path / "metrics" / "train.json").read_text())
    assert metrics["val_accuracy_low"] > metrics["val_majority_class_rate"], result.describe()


def test_the_feature_layer_can_be_named(mobilenet: tuple[Path, Path], tmp_path: Path) -> None:
    import keras

    model_file, prepared = mobilenet
    named = keras.models.load_model(model_file, compile=False).layers[-5].name  # before dropout
    result = train(ModelFileOptions(path=model_file),
                   TrainParams(batch_size=16, fine_tune=FineTuneOptions(
                       epochs=2, learning_rate=0.01, feature_layer=named)),
                   prepared, tmp_path / "base", tmp_path / "metrics")
    tuned = keras.models.load_model(tmp_path / "base" / "model.keras", compile=False)
    assert tuned.get_layer("edgeflow_head").kernel.shape == (1024, 3)
    assert named in {layer.name for layer in tuned.layers} and result.epochs_run >= 1
    assert [layer.name for layer in tuned.layers][-3:] == [named, "edgeflow_flatten",
                                                           "edgeflow_head"]
    with pytest.raises(TrainingError) as refused:
        train(ModelFileOptions(path=model_file),
              TrainParams(fine_tune=FineTuneOptions(feature_layer="nosuch")),
              prepared, tmp_path / "other", tmp_path / "other_metrics")
    assert str(refused.value).startswith(
        "train: train.fine_tune.feature_layer 'nosuch' is not a layer of mnv3.keras with one "
        "output (its last layers: ")
    assert not (tmp_path / "other").exists()


def _fine_tuned(tiny_project: Any, keras_file: Path, options: FineTuneOptions) -> Any:
    """``fine_tune`` of ``keras_file`` on the tiny project's digits (batch 64)."""
    from tasks.core.contracts.prepared import load_split
    from tasks.models.model_file import input_spec, inspect_model_file, load_keras
    from tasks.train import fine_tune

    prepared = tiny_project.layout.prepared
    splits = {split: load_split(prepared, split) for split in ("train", "val")}
    spec = input_spec(inspect_model_file(keras_file), ModelFileOptions(path=keras_file), (16, 16))
    model, _, _ = fine_tune(load_keras(keras_file), options, TrainParams(batch_size=64), splits,
                            spec, 10, keras_file.name)
    return model


def test_a_frozen_fine_tune_on_a_conv_layers_features_keeps_that_layers_kernel(
        tiny_project: Any, files: dict[str, Path]) -> None:
    """``feature_layer: conv1`` (a layer with weights) and ``freeze_base``: the new head
    reads conv1's output and trains; conv1 itself is part of the frozen base. The head's
    starting weights are seeded: a fine-tune that cannot move (learning rate 0) shows them."""
    import keras

    original = keras.models.load_model(files["keras"], compile=False)
    tuned, still = (_fine_tuned(tiny_project, files["keras"], FineTuneOptions(
        epochs=1, learning_rate=rate, freeze_base=True, feature_layer="conv1"))
        for rate in (0.01, 1e-30))
    assert [layer.name for layer in tuned.layers][-3:] == ["conv1", "edgeflow_pool",
                                                           "edgeflow_head"]
    for name in ("conv0", "conv1"):
        np.testing.assert_array_equal(tuned.get_layer(name).kernel.numpy(),
                                      original.get_layer(name).kernel.numpy())
    head, start = tuned.get_layer("edgeflow_head"), still.get_layer("edgeflow_head")
    assert np.abs(head.kernel.numpy() - start.kernel.numpy()).max() > 1e-3
    assert np.abs(head.bias.numpy() - start.bias.numpy()).max() > 1e-3


def test_an_unfrozen_fine_tune_trains_the_base_and_reestimates_its_batch_norms(
        tiny_project: Any, files: dict[str, Path]) -> None:
    """``freeze_base: false``: every kernel trains, and the batch-norm statistics kept are
    the ones the train images give on the final weights (re-estimated after each epoch),
    not the moving averages of training."""
    import keras

    from tasks.core.contracts.prepared import load_split
    from tasks.models import batch_norm

    original = keras.models.load_model(files["keras"], compile=False)
    tuned = _fine_tuned(tiny_project, files["keras"], FineTuneOptions(
        epochs=1, learning_rate=0.01, freeze_base=False))
    assert [layer.name for layer in tuned.layers] == [layer.name for layer in original.layers]
    for name in ("conv0", "conv1", "logits"):
        assert np.abs(tuned.get_layer(name).kernel.numpy()
                      - original.get_layer(name).kernel.numpy()).max() > 1e-3, name
    kept = {(layer.name, name): getattr(layer, name).numpy().copy()
            for layer in batch_norm.batch_norm_layers(tuned)
            for name in ("moving_mean", "moving_variance")}
    assert batch_norm.reestimate(tuned, load_split(tiny_project.layout.prepared, "train")[0],
                                 64) == 2
    for (layer, name), values in kept.items():
        np.testing.assert_allclose(values, getattr(tuned.get_layer(layer), name).numpy(),
                                   rtol=1e-5, atol=1e-6)
        assert np.abs(values - getattr(original.get_layer(layer), name).numpy()).max() > 1e-3
