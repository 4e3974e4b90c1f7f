"""Tests of the optimize step, its pruning recipes and the model figures, on tiny data:
digits at 16x16 and the 2-block small_cnn of ``TINY_PARAMS``, trained once per module.

Expected parameter and MAC counts are computed by hand in comments, not by the code
under test.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tasks.config import OptimizeParams, Params, load_params
from tasks.core.contracts.prepared import load_split
from tasks.core.errors import ConfigError, StepError
from tasks.core.files import read_json, write_json
from tasks.core.layout import Layout
from tasks.models.stats import count_macs, count_params, gzip_size, kernel_sparsity
from tasks.optimize import optimize
from tasks.models.pruning import (RECIPES, MagnitudePruningOptions, StructuredPruningOptions,
                           TrainingData, recipe)
from tests.tiny import write_tiny_config

CHANCE = 0.1  # ten digit classes
# Above chance by a margin that 2 fine-tuning epochs reach reliably (measured ~0.5).
MIN_ACCURACY = 0.25
FAST = {"epochs": 2, "learning_rate": 0.01, "batch_size": 32}


@dataclass(frozen=True)
class Trained:
    layout: Layout
    params: Params
    data: TrainingData
    x_test: np.ndarray
    y_test: np.ndarray


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """prepare -> train only (the optimize step needs no converted variants), so this
    module does not depend on the convert step."""
    from tasks.prepare import prepare
    from tasks.train import train

    root = tmp_path_factory.mktemp("optimize-project")
    write_tiny_config(root)
    params = load_params(root / "params.yaml")
    layout = Layout(root)
    prepare(params.data, layout.prepared)
    train(params.model, params.train, layout.prepared, layout.base_model,
          layout.train_metrics.parent)
    x_train, y_train = load_split(layout.prepared, "train")
    x_val, y_val = load_split(layout.prepared, "val")
    x_test, y_test = load_split(layout.prepared, "test")
    return Trained(layout, params, TrainingData(x_train, y_train, x_val, y_val), x_test, y_test)


def _base_model(trained: Trained):  # type: ignore[no-untyped-def]
    import keras

    return keras.models.load_model(trained.layout.base_model / "model.keras")


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def _small_cnn_figures(filters: list[int], side: int, channels: int,
                       classes: int) -> tuple[int, int]:
    """(parameters, MACs) of a small_cnn by hand: 3x3 'same' convs without bias, BN with
    4 vectors, 2x2 pooling after every block but the last, GAP, Dense with bias."""
    params = macs = 0
    c_in = channels
    for index, c_out in enumerate(filters):
        params += 9 * c_in * c_out + 4 * c_out
        macs += side * side * 9 * c_in * c_out
        if index < len(filters) - 1:
            side //= 2
        c_in = c_out
    params += c_in * classes + classes
    macs += c_in * classes
    return params, macs


# ---------------------------------------------------------------- model figures


def test_model_stats_on_a_hand_built_model(tmp_path: Path) -> None:
    import keras
    from keras import layers

    inputs = keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, padding="valid", use_bias=True, name="conv")(inputs)  # -> 4x4x4
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)    # -> 4x4x4
    x = layers.Conv2D(4, 1, groups=2, name="grouped")(x)                           # -> 4x4x4
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.MaxPooling2D(2)(x)                                                  # -> 2x2x4
    x = layers.Flatten()(x)                                                        # -> 16
    outputs = layers.Dense(3, name="dense")(x)
    model = keras.Model(inputs, outputs)

    # conv 3*3*2*4+4=76, dw 3*3*4=36, grouped 1*1*(4/2)*4+4=12, bn 4*4=16, dense 16*3+3=51
    assert count_params(model) == 76 + 36 + 12 + 16 + 51
    # conv 4*4*3*3*2*4=1152, dw 4*4*3*3*4=576, grouped 4*4*1*1*4*4/2=128, dense 16*3=48
    assert count_macs(model) == 1152 + 576 + 128 + 48

    assert kernel_sparsity(model) == 0.0  # biases start at zero but are not kernels
    model.get_layer("conv").kernel.assign(np.zeros((3, 3, 2, 4), "float32"))
    # 72 zeros over the kernels: conv 72 + dw 36 + grouped 8 + dense 48 = 164
    assert kernel_sparsity(model) == pytest.approx(72 / 164)


def test_model_stats_of_the_tiny_small_cnn() -> None:
    from tasks.models.architectures import SmallCNNOptions, build_model

    model = build_model(SmallCNNOptions(filters=[8, 16]), (16, 16, 1), 10)
    # conv0 9*1*8 + bn0 32 + conv1 9*8*16 + bn1 64 + logits 16*10+10 = 1490
    assert count_params(model) == 72 + 32 + 1152 + 64 + 170 == 1490
    # conv0 16*16*9*1*8 + conv1 (after pooling) 8*8*9*8*16 + logits 16*10 = 92320
    assert count_macs(model) == 18432 + 73728 + 160 == 92320


def test_gzip_size_measures_compressed_bytes(tmp_path: Path) -> None:
    zeros = tmp_path / "zeros.bin"
    zeros.write_bytes(bytes(200_000))
    noise = tmp_path / "noise.bin"
    noise_bytes = np.random.default_rng(0).bytes(50_000)
    noise.write_bytes(noise_bytes)

    assert gzip_size(zeros) < 1_000
    assert gzip_size(zeros) == len(gzip.compress(bytes(200_000), compresslevel=9, mtime=0))
    assert gzip_size(noise) > len(noise_bytes)  # incompressible: only the header is added
    assert gzip_size(noise) == gzip_size(noise)  # deterministic (mtime 0 in the header)


# ---------------------------------------------------------------- magnitude pruning


def test_polynomial_schedule_and_exact_masks() -> None:
    from tasks.models.pruning.magnitude import magnitude_mask, polynomial_sparsity

    assert polynomial_sparsity(0, 0.8, 100) == 0.0
    assert polynomial_sparsity(50, 0.8, 100) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    assert polynomial_sparsity(100, 0.8, 100) == 0.8
    assert polynomial_sparsity(250, 0.8, 100) == 0.8
    ramp = [polynomial_sparsity(step, 0.8, 100) for step in range(0, 101, 10)]
    assert ramp == sorted(ramp)

    assert magnitude_mask(np.array([-5.0, 1.0, 0.1, 3.0]), 0.5).tolist() == [1, 0, 0, 1]
    # All weights equal: a threshold would zero none or all; the count must still be exact.
    assert int((magnitude_mask(np.ones((2, 5)), 0.3) == 0).sum()) == 3


def test_magnitude_pruning_reaches_target_sparsity(trained: Trained) -> None:
    from tasks.models.pruning.magnitude import prune_magnitude

    base = _base_model(trained)
    base_weights = [w.copy() for w in base.get_weights()]
    options = MagnitudePruningOptions(name="sparse50", sparsity=0.5, update_every=5, **FAST)

    pruned = prune_magnitude(options, base, trained.data)

    assert abs(kernel_sparsity(pruned.model) - 0.5) <= 0.02
    for name in ("conv0", "conv1", "logits"):
        kernel = pruned.model.get_layer(name).kernel.numpy()
        assert int((kernel == 0).sum()) == round(0.5 * kernel.size), name
    # The per-batch masks held while Adam kept updating: measured before the final
    # masking, the sparsity was already at the target.
    assert abs(pruned.details["sparsity_at_train_end"] - 0.5) <= 0.02
    assert pruned.details["schedule"]["mask_updates"] >= 2
    assert [layer.name for layer in pruned.model.layers] == [layer.name for layer in base.layers]
    assert all(np.array_equal(a, b) for a, b in zip(base.get_weights(), base_weights))
    assert _accuracy(pruned.model, trained.x_test, trained.y_test) > MIN_ACCURACY > CHANCE


@pytest.mark.parametrize("method", ["magnitude", "structured"])
def test_fine_tuning_leaves_batch_norm_statistics_of_the_final_weights(
        trained: Trained, method: str) -> None:
    """The pruned model is used in inference mode: after fine-tuning, its moving
    statistics are those of its own final weights on the train split (re-estimating them
    once more changes nothing), not averages lagging a few epochs behind."""
    from tasks.models import batch_norm

    options = (MagnitudePruningOptions(name="m", sparsity=0.5, **FAST) if method == "magnitude"
               else StructuredPruningOptions(name="s", ratio=0.5, **FAST))
    model = recipe(method)(options, _base_model(trained), trained.data).model
    layers = batch_norm.batch_norm_layers(model)
    assert layers
    kept = [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()) for layer in layers]
    batch_norm.reestimate(model, trained.data.x_train, FAST["batch_size"])
    for layer, (mean, variance) in zip(layers, kept):
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- structured pruning


def test_structured_rebuild_copies_the_kept_filters(trained: Trained) -> None:
    from tasks.models.pruning.structured import kept_filters, shrink_small_cnn

    base = _base_model(trained)
    small, kept = shrink_small_cnn(base, 0.5)

    assert [len(k) for k in kept] == [4, 8]  # filters [8, 16] halved
    assert [layer.name for layer in small.layers] == [layer.name for layer in base.layers]
    k0 = base.get_layer("conv0").kernel.numpy()
    k1 = base.get_layer("conv1").kernel.numpy()
    # The largest-L1 filters, computed independently of the code under test.
    assert kept[0].tolist() == sorted(np.argsort(np.abs(k0).sum(axis=(0, 1, 2)))[-4:].tolist())
    assert kept[1].tolist() == sorted(np.argsort(np.abs(k1).sum(axis=(0, 1, 2)))[-8:].tolist())

    np.testing.assert_array_equal(small.get_layer("conv0").kernel.numpy(), k0[..., kept[0]])
    np.testing.assert_array_equal(small.get_layer("conv1").kernel.numpy(),
                                  k1[:, :, kept[0], :][..., kept[1]])
    for index, kept_out in enumerate(kept):
        for copied, original in zip(small.get_layer(f"bn{index}").get_weights(),
                                    base.get_layer(f"bn{index}").get_weights()):
            np.testing.assert_array_equal(copied, original[kept_out])
    dense_kernel, dense_bias = base.get_layer("logits").get_weights()
    np.testing.assert_array_equal(small.get_layer("logits").kernel.numpy(), dense_kernel[kept[1]])
    np.testing.assert_array_equal(small.get_layer("logits").bias.numpy(), dense_bias)

    # 1490 -> conv0 9*4 + bn0 16 + conv1 9*4*8 + bn1 32 + logits 8*10+10 = 462
    assert count_params(small) == 462 < 0.5 * count_params(base)
    # 92320 -> 16*16*9*4 + 8*8*9*4*8 + 8*10 = 27728
    assert count_macs(small) == 27728 < count_macs(base)

    assert kept_filters(np.ones((3, 3, 1, 3)), 0.9).tolist() == [0]  # at least one filter


def test_structured_pruning_rejects_mobilenet_in_one_line() -> None:
    from tasks.models.architectures import MobileNetV2Options, build_model
    from tasks.models.pruning.structured import prune_structured

    model = build_model(MobileNetV2Options(width_multiplier=0.35), (16, 16, 1), 10)
    empty = np.zeros((0, 16, 16, 1), "float32")
    labels = np.zeros((0,), "int64")
    with pytest.raises(ConfigError) as raised:
        prune_structured(StructuredPruningOptions(name="slim", ratio=0.5, **FAST), model,
                         TrainingData(empty, labels, empty, labels))
    message = str(raised.value)
    assert "\n" not in message
    assert "small_cnn" in message and "mobilenet_v2" in message and "slim" in message


def test_recipe_registry_names_the_valid_methods() -> None:
    # Every method params.yaml accepts has a recipe.
    methods = {options.model_fields["method"].default
               for options in (MagnitudePruningOptions, StructuredPruningOptions)}
    assert methods == set(RECIPES)
    with pytest.raises(ConfigError, match="magnitude, structured"):
        recipe("lottery")


def test_importing_the_pruning_registry_does_not_load_tensorflow() -> None:
    code = ("import sys, tasks.models.pruning, tasks.config, tasks.models.stats; "
            "sys.exit(int('tensorflow' in sys.modules or 'keras' in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- the step


def test_optimize_writes_each_source_and_the_index(trained: Trained, tmp_path: Path) -> None:
    import keras

    out_dir = tmp_path / "pruned"
    params = OptimizeParams(pruning=[
        MagnitudePruningOptions(name="sparse50", sparsity=0.5, update_every=5, **FAST),
        StructuredPruningOptions(name="slim50", ratio=0.5, **FAST),
    ])
    assert optimize(params, trained.layout.base_model, trained.layout.prepared, out_dir) == out_dir

    index = read_json(out_dir / "index.json")
    assert [s["name"] for s in index["sources"]] == ["sparse50", "slim50"]
    assert [s["method"] for s in index["sources"]] == ["magnitude", "structured"]
    base_accuracy = float(np.mean(read_json(trained.layout.base_model / "reference.json")
                                  ["test_correct"]))
    filters = trained.params.model.filters  # type: ignore[union-attr]
    base_params, base_macs = _small_cnn_figures(filters, 16, 1, 10)
    small_params, small_macs = _small_cnn_figures([round(f / 2) for f in filters], 16, 1, 10)

    for source in index["sources"]:
        folder = out_dir / source["name"]
        assert (folder / "saved_model" / "saved_model.pb").is_file()
        correct = read_json(folder / "reference.json")["test_correct"]
        assert len(correct) == len(trained.y_test)
        assert source["accuracy"] == {"before": pytest.approx(base_accuracy),
                                      "after": pytest.approx(float(np.mean(correct)))}
        assert source["accuracy"]["after"] > MIN_ACCURACY
        assert source["parameters"]["before"] == base_params
        assert source["macs"]["before"] == base_macs
        assert source["kernel_sparsity"]["before"] == 0.0
        base_file = trained.layout.base_model / "model.keras"
        assert source["keras_bytes"]["before"] == base_file.stat().st_size
        assert source["keras_bytes"]["after"] == (folder / "model.keras").stat().st_size
        assert source["options"]["name"] == source["name"]

    sparse, slim = index["sources"]
    # Unstructured: same shape and cost, half the kernels zero; it only pays once
    # compressed.
    assert sparse["parameters"]["after"] == base_params
    assert sparse["macs"]["after"] == base_macs
    assert abs(sparse["kernel_sparsity"]["after"] - 0.5) <= 0.02
    assert sparse["keras_gzip_bytes"]["after"] < sparse["keras_gzip_bytes"]["before"]
    reloaded = keras.models.load_model(out_dir / "sparse50" / "model.keras")
    assert abs(kernel_sparsity(reloaded) - 0.5) <= 0.02  # the zeros survive saving
    # Structured: a smaller dense network.
    assert slim["parameters"]["after"] == small_params < 0.5 * base_params
    assert slim["macs"]["after"] == small_macs < base_macs
    assert slim["details"]["filters_after"] == [round(f / 2) for f in filters]
    assert slim["keras_bytes"]["after"] < slim["keras_bytes"]["before"]


def test_optimize_without_recipes_writes_an_empty_index(trained: Trained, tmp_path: Path) -> None:
    out_dir = tmp_path / "pruned"
    optimize(OptimizeParams(), trained.layout.base_model, trained.layout.prepared, out_dir)
    assert read_json(out_dir / "index.json") == {"sources": []}
    assert sorted(p.name for p in out_dir.iterdir()) == ["index.json"]


def test_optimize_without_a_trained_model_names_the_missing_step(trained: Trained,
                                                                 tmp_path: Path) -> None:
    with pytest.raises(StepError, match="run the train step first"):
        optimize(OptimizeParams(), tmp_path / "no-model", trained.layout.prepared,
                 tmp_path / "pruned")
    assert not (tmp_path / "pruned").exists()


def test_failed_recipe_keeps_the_previous_outputs(trained: Trained, tmp_path: Path) -> None:
    from tasks.models.architectures import MobileNetV2Options, build_model

    # A mobilenet_v2 "base" model: structured pruning refuses it, after the step started.
    model_dir = tmp_path / "mobilenet"
    model_dir.mkdir()
    build_model(MobileNetV2Options(width_multiplier=0.35), (16, 16, 1), 10).save(
        model_dir / "model.keras")
    write_json(model_dir / "reference.json", {"test_correct": [0] * len(trained.y_test)})

    out_dir = tmp_path / "pruned"
    (out_dir / "old").mkdir(parents=True)
    (out_dir / "old" / "model.keras").write_bytes(b"previous model")
    write_json(out_dir / "index.json", {"sources": [{"name": "old"}]})

    params = OptimizeParams(pruning=[StructuredPruningOptions(name="slim50", ratio=0.5, **FAST)])
    with pytest.raises(ConfigError, match="structured pruning supports small_cnn only") as raised:
        optimize(params, model_dir, trained.layout.prepared, out_dir)
    assert "\n" not in str(raised.value)

    assert read_json(out_dir / "index.json") == {"sources": [{"name": "old"}]}
    assert (out_dir / "old" / "model.keras").read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mobilenet", "pruned"]  # no staging left
    assert len(list(out_dir.rglob("*"))) == 3  # old/, old/model.keras, index.json


def test_a_task_no_recipe_fine_tunes_is_not_pruned_and_every_recipe_says_why(
        tmp_path: Path) -> None:
    from tasks.optimize import _unprunable

    assert _unprunable(tmp_path, "toy") == (
        "pruning recipes fine-tune classification and detection models; data.task is toy "
        "(not pruned yet)")
    assert _unprunable(tmp_path, "classification") is None
    assert _unprunable(tmp_path, "detection") is None


def test_a_detector_is_pruned_by_magnitude_and_judged_by_its_map(tmp_path: Path) -> None:
    """A tiny detector (trained a few epochs on synthetic scenes) pruned to half its
    Conv2D weights: the sparsity is reached, the fine-tuning is judged per epoch by val
    mAP@0.5 (not an accuracy), and the index's figures before and after are the
    detection kind's mAP@0.5 on the test scenes, the pruned one that of the model
    written (which loads without the training loss); its reference names the task and
    holds each image's matches. Structured pruning refuses the detector's residual
    wiring with the reason."""
    import keras

    from tasks.config import TrainParams
    from tasks.core.accuracy import reference_on_first
    from tasks.models.architectures import TinyDetectorOptions, build_model
    from tasks.models.seeding import seed_training
    from tasks.train.detection import evaluate, fit_detector
    from tests.tasks.train.test_detection import _prepared

    prepared = _prepared(tmp_path, {"train": 64, "val": 32, "test": 32}, same_scenes=True)
    splits = {split: load_split(prepared, split) for split in ("train", "val", "test")}
    seed_training(0)
    model = build_model(TinyDetectorOptions(width_multiplier=0.35), (96, 96, 3), 10)
    # About 45 s here: 40 epochs of 64 scenes take it to a mAP@0.5 of about 0.2 on them.
    fit_detector(model, TrainParams(epochs=40, batch_size=16, learning_rate=3e-3,
                                    early_stopping_patience=50), splits, 10)
    x_test, y_test = splits["test"]
    base = evaluate(model.predict(x_test, verbose=0), y_test, interval=False)
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    keras.Model(model.inputs, model.outputs, name=model.name).save(base_dir / "model.keras")
    write_json(base_dir / "reference.json", {"task": "detection", "test_correct": base.records})

    params = OptimizeParams(pruning=[MagnitudePruningOptions(
        name="pruned50", sparsity=0.5, epochs=2, learning_rate=1e-3, batch_size=16)])
    optimize(params, base_dir, prepared, tmp_path / "pruned")
    source = read_json(tmp_path / "pruned" / "index.json")["sources"][0]
    assert source["accuracy"]["before"] == pytest.approx(base.map50, abs=1e-12)
    assert base.map50 > 0.1
    assert source["details"]["pruned_sparsity"] == pytest.approx(0.5, abs=0.01)
    # Its depthwise kernels stay dense (magnitude.py): the whole model's share is lower.
    assert source["kernel_sparsity"]["after"] > source["kernel_sparsity"]["before"] + 0.3
    history = source["details"]["history"]
    assert len(history["val_map50"]) == 2 and len(history["val_loss"]) == 2
    assert "val_accuracy" not in history and "accuracy" not in history

    written = read_json(tmp_path / "pruned" / "pruned50" / "reference.json")
    assert written["task"] == "detection" and len(written["test_correct"]) == 32
    pruned = keras.models.load_model(tmp_path / "pruned" / "pruned50" / "model.keras")
    rescored = evaluate(pruned.predict(x_test, verbose=0), y_test, interval=False)
    assert written["test_correct"] == rescored.records
    assert source["accuracy"]["after"] == pytest.approx(rescored.map50, abs=1e-12)
    # Two epochs at half the weights cost this detector most of its mAP (0.22 -> ~0.0004
    # here): the figure is reported as measured, whatever it is.
    assert source["accuracy"]["after"] == reference_on_first(written["test_correct"], 0,
                                                             "detection")

    with pytest.raises(ConfigError, match="structured pruning supports small_cnn only, not "
                                          "'tiny_detector'; use method 'magnitude'"):
        recipe("structured")(StructuredPruningOptions(name="slim", ratio=0.5, **FAST), pruned,
                             TrainingData(*splits["train"], *splits["val"], "detection"))


def test_a_pruned_detectors_reference_is_scored_under_data_detection() -> None:
    """test_results decodes by the spec it is given (optimize's: data.detection), as
    train's reference and the variants do: the same outputs score mAP 0.75 at a score
    threshold of 0.25 and 0.5 at 0.5 (tests/tasks/train/test_detection.py's scene)."""
    from tasks.config import DetectionDecoding, decoding_spec
    from tasks.core import device_code
    from tasks.core.accuracy import reference_on_first
    from tasks.optimize import test_results
    from tests.tasks.train.test_detection import threshold_scene

    outputs, labels = threshold_scene()
    kind = device_code.task_kinds().get("detection")
    for threshold, expected in ((0.25, 0.75), (0.5, 0.5)):
        records = test_results(kind, outputs, labels,
                               decoding_spec(DetectionDecoding(score_threshold=threshold)))
        assert reference_on_first(records, 0, "detection") == pytest.approx(expected, abs=1e-12)
