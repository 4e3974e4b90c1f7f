"""Step train: a real (tiny) training run, the architecture registry, failure modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.models.architectures import ARCHITECTURES, MobileNetV2Options, SmallCNNOptions, build_model
from tasks.core.errors import StepError
from tasks.core.files import read_json


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


def test_balanced_class_weights_give_each_class_the_same_total() -> None:
    from tasks.train import class_weights

    labels = np.array([0, 0, 0, 1, 2, 2])
    weights = class_weights(labels, 4, "balanced")
    np.testing.assert_allclose(weights, [6 / 12, 6 / 4, 6 / 8, 0.0])
    per_class_total = np.bincount(labels, weights=weights[labels], minlength=4)
    np.testing.assert_allclose(per_class_total[:3], [1.5, 1.5, 1.5])
    np.testing.assert_array_equal(class_weights(labels, 4, "none"), [1, 1, 1, 1])


def test_cross_entropy_is_the_mean_negative_log_probability_of_the_label() -> None:
    from tasks.train import cross_entropy

    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    expected = -(np.log(np.exp(2) / (np.exp(2) + 2)) + np.log(1 / 3)) / 2
    assert cross_entropy(logits, np.array([0, 2])) == pytest.approx(expected)
    assert cross_entropy(logits + 1000.0, np.array([0, 2])) == pytest.approx(expected)  # stable


def test_a_better_epoch_has_higher_accuracy_then_lower_loss() -> None:
    from tasks.train import epoch_key

    assert epoch_key(0.90, 0.50) > epoch_key(0.89, 0.10)  # accuracy first
    assert epoch_key(0.90, 0.30) > epoch_key(0.90, 0.50)  # a tie: the lower loss
    assert not epoch_key(0.90, 0.50) > epoch_key(0.90, 0.50)  # equal is not better


def test_batches_are_a_seeded_permutation_per_epoch() -> None:
    from tasks.models.augmenter import augmenter
    from tasks.config import AugmentationParams
    from tasks.train import ShuffledBatches

    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    batches = ShuffledBatches(images, np.arange(10), np.arange(10) * 0.5, 4,
                              augmenter(AugmentationParams()), seed=7)
    first = [batches[index] for index in range(len(batches))]
    assert len(batches) == 3 and [len(b[0]) for b in first] == [4, 4, 2]
    seen = np.concatenate([b[1] for b in first])
    assert sorted(seen) == list(range(10)) and list(seen) != list(range(10))
    for x, y, w in first:  # images, targets and weights stay together
        np.testing.assert_array_equal(x.ravel(), y)
        np.testing.assert_array_equal(w, y * 0.5)
    np.testing.assert_array_equal(batches[1][1], first[1][1])  # same epoch, same batch
    batches.on_epoch_end()
    assert list(np.concatenate([batches[i][1] for i in range(3)])) != list(seen)


@pytest.mark.parametrize("name, step_at_end", [("constant", 1.0), ("cosine", 0.01)])
def test_learning_rate_schedules(name: str, step_at_end: float) -> None:
    from tasks.config import TrainParams
    from tasks.train import LR_SCHEDULES

    params = TrainParams(epochs=10, learning_rate=0.002)
    rate, callbacks = LR_SCHEDULES[name](params, 5)
    assert callbacks == []
    at_end = rate(50) if callable(rate) else rate
    assert float(at_end) == pytest.approx(0.002 * step_at_end, rel=1e-4)
    if callable(rate):
        assert float(rate(25)) == pytest.approx(0.002 * (0.01 + 0.99 * 0.5), rel=1e-4)


def test_plateau_halves_the_rate_on_a_stalled_val_loss() -> None:
    from tasks.config import TrainParams
    from tasks.train import LR_SCHEDULES

    rate, callbacks = LR_SCHEDULES["plateau"](TrainParams(learning_rate=0.01,
                                                          early_stopping_patience=9), 5)
    (plateau,) = callbacks
    assert rate == 0.01 and plateau.monitor == "val_loss" and plateau.factor == 0.5
    assert plateau.patience == 3 and plateau.min_lr == pytest.approx(1e-4)


@pytest.mark.parametrize("correct, total, learned", [
    (27, 45, False),  # 0.60 [0.45, 0.73]: the interval holds the majority rate 23/45
    (40, 45, True),   # 0.89 [0.77, 0.95]
    (60, 100, False),  # 0.60 [0.502, 0.69]: its low end is under the majority rate 0.51
    (62, 100, True),  # 0.62 [0.522, 0.71]: just clear of it
    # 32/49 * 49 is 31.999...: the count taken back with int() would be 31, whose low
    # end 0.493 is under the rate 25/49 = 0.510; 32's is 0.513, clear of it.
    (32, 49, True),
])
def test_a_model_learned_only_when_val_accuracy_clears_the_majority_rate(
        correct: int, total: int, learned: bool) -> None:
    from tasks.core.errors import TrainingError
    from tasks.train import SplitScore, check_learned

    labels = np.array([0] * (total // 2 + 1) + [1] * (total - total // 2 - 1))
    val = SplitScore(correct / total, total)
    if learned:
        check_learned(SplitScore(1.0, 100), val, labels)
    else:
        with pytest.raises(TrainingError, match="did not learn"):
            check_learned(SplitScore(0.99, 100), val, labels)


def test_the_did_not_learn_error_is_one_line_with_the_numbers_and_what_to_try() -> None:
    from tasks.core.errors import TrainingError
    from tasks.train import SplitScore, check_learned

    with pytest.raises(TrainingError) as refused:
        check_learned(SplitScore(0.99, 100), SplitScore(27 / 45, 45), np.array([0] * 23 + [1] * 22))
    message = str(refused.value)
    assert "\n" not in message
    assert "validation accuracy 0.60 [0.45, 0.73]" in message
    assert "majority-class rate 0.51" in message and "train accuracy 0.99 [0.95, 1.00]" in message
    assert "train.augmentation" in message and "previous model" in message


def test_the_console_line_gives_each_split_with_its_interval() -> None:
    from tasks.train import SplitScore, TrainResult

    result = TrainResult(Path("m"), SplitScore(1.0, 130), SplitScore(28 / 29, 29),
                         SplitScore(37 / 41, 41), best_epoch=12, epochs_run=20)
    assert result.describe() == ("train 1.00 [0.97, 1.00], val 0.97 [0.83, 0.99], "
                                 "test 0.90 [0.77, 0.96] (95% intervals); epoch 12 of 20 kept")


@pytest.mark.parametrize("epochs_run, last", [
    (2, ["train: 2/4 (stopped early: no better val accuracy for 3 epochs)"]),
    (4, []),
])
def test_each_epoch_is_reported_and_an_early_stop_says_so(epochs_run: int, last: list[str]) -> None:
    from tasks.core import notices
    from tasks.train.progress import EpochProgress

    seen: list[notices.Notice] = []
    callback = EpochProgress(total_epochs=4, patience=3)
    with notices.listening(seen.append):
        callback.on_train_begin()
        for epoch in range(epochs_run):
            callback.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "accuracy": 0.25 * epoch,
                                          "val_accuracy": 0.5})
        callback.on_train_end()
    assert [notice.line() for notice in seen] == ["train: 0/4"] + [
        f"train: {epoch + 1}/4 (loss {1.0 / (epoch + 1):.3f} acc {0.25 * epoch:.3f} "
        "val_acc 0.500)" for epoch in range(epochs_run)] + last
    assert [notice.stopped for notice in seen] == [False] * (epochs_run + 1) + [True] * len(last)


# A fine-tune of a model brought as a file, one short training and both pruning
# fine-tunes, on the tiny project's data, in a process of its own; "busy": another thread draws from Python's global random generator all
# along, as Prefect's own threads do during a flow run.
SEEDED_RUN = """\
import random, sys, threading, time
from pathlib import Path

prepared, brought, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
busy = sys.argv[4] == "busy"
if busy:
    def draw() -> None:
        while True:
            random.random()
            time.sleep(0.001)
    threading.Thread(target=draw, daemon=True).start()

from tasks.config import load_params
from tasks.models.model_file import FineTuneOptions, ModelFileOptions
from tasks.optimize import optimize
from tasks.train import train

params = load_params(out / "params.yaml")
# First, while nothing in the process has seeded anything yet.
tuning = params.train.model_copy(update={"fine_tune": FineTuneOptions(epochs=1)})
train(ModelFileOptions(path=brought), tuning, prepared, out / "tuned", out / "tuned-metrics")
train(params.model, params.train, prepared, out / "base", out / "metrics")
optimize(params.optimize, out / "base", prepared, out / "pruned", seed=params.train.seed)
"""


def test_two_trainings_in_two_processes_give_bit_identical_weights(tiny_project,
                                                                   tmp_path: Path) -> None:
    """Same params, same seed, same machine: the same weights to the bit (the model, its
    slim and pruned fine-tunes, a fine-tune of it brought as a file) and the same
    per-epoch curves, even when the process has other threads drawing random numbers."""
    import os
    import subprocess
    import sys

    import keras

    from tests.tiny import TINY_PARAMS

    params = TINY_PARAMS.replace("epochs: 6", "epochs: 2").replace(
        "seed: 42}", "seed: 42, augmentation: {shift: 0.1, brightness: 0.1}}").replace(
        "optimize: {pruning: []}",
        "optimize: {pruning: [{name: pruned50, method: magnitude, sparsity: 0.5, epochs: 1},\n"
        "                     {name: slim50, method: structured, ratio: 0.5, epochs: 1}]}")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    # One process after the other (about 13 s each here): each has the machine's cores
    # to itself and its own time limit, so a loaded CI runner does not make them race
    # each other for the limit; nothing passes between them, so the property is the same.
    for name in ("quiet", "busy"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "params.yaml").write_text(params, encoding="utf-8")
        run = subprocess.run(
            [sys.executable, "-c", SEEDED_RUN, str(tiny_project.layout.prepared),
             str(tiny_project.layout.base_model / "model.keras"), str(tmp_path / name), name],
            env=env, cwd=tmp_path, stderr=subprocess.PIPE,
            text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]

    for model in ("base", "pruned/pruned50", "pruned/slim50", "tuned"):
        quiet, busy = (keras.models.load_model(tmp_path / name / model / "model.keras",
                                               compile=False).get_weights()
                       for name in ("quiet", "busy"))
        assert len(quiet) == len(busy) > 0
        differ = [index for index, (ours, theirs) in enumerate(zip(quiet, busy))
                  if ours.tobytes() != theirs.tobytes()]
        assert differ == [], f"{model}: weights {differ} differ"
    curves = [read_json(tmp_path / name / "metrics" / "train_history.json")
              for name in ("quiet", "busy")]
    assert len(curves[0]) == 2 and curves[0] == curves[1]


@pytest.mark.parametrize(("value", "divisor", "expected"), [
    (3.0, 8, 8),      # never below the divisor
    (8.0, 8, 8), (8.88, 8, 8),  # rounded down by less than 10%: kept
    (8.9, 8, 16),     # rounded down to 8 would lose more than 10% of 8.9: one step up
    (11.2, 8, 16),    # MobileNetV2 0.35's stem (32 * 0.35): 16, as in the paper
    (11.99, 8, 16), (12.0, 8, 16),  # half way rounds up
    (43.9, 8, 40), (44.0, 8, 48),
    (10.0, 4, 12), (5.0, 4, 8), (4.4, 4, 4),
    (10.0, 3, 9),     # 9 is exactly 90% of 10: kept (more than 10% lost moves it up)
])
def test_make_divisible_rounds_to_the_nearest_multiple_losing_at_most_ten_percent(
        value: float, divisor: int, expected: int) -> None:
    from tasks.models.architectures import _make_divisible

    assert _make_divisible(value, divisor) == expected
    if divisor == 8:
        assert _make_divisible(value) == expected


def _layers_of(model, kind: str) -> list:
    return [layer for layer in model.layers if layer.__class__.__name__ == kind]


def test_small_cnn_is_one_conv_block_per_filter_count_pooled_between() -> None:
    from tasks.models.architectures import BN_MOMENTUM

    model = build_model(SmallCNNOptions(filters=[4, 8, 6], dropout=0.3), (16, 16, 1), 5)
    assert [layer.filters for layer in _layers_of(model, "Conv2D")] == [4, 8, 6]
    assert all(not layer.use_bias for layer in _layers_of(model, "Conv2D"))
    assert [layer.name for layer in _layers_of(model, "MaxPooling2D")] == ["pool0", "pool1"]
    assert [layer.momentum for layer in _layers_of(model, "BatchNormalization")] == [BN_MOMENTUM] * 3
    assert BN_MOMENTUM == 0.9
    [dropout] = _layers_of(model, "Dropout")
    assert dropout.rate == 0.3
    assert model.get_layer("gap").output.shape == (None, 6)
    assert model.name == "small_cnn" and model.input_shape == (None, 16, 16, 1)


def test_mobilenet_v2_widths_strides_and_residuals_follow_the_schedule() -> None:
    """Width 0.5 of the schedule (16, 24x2, 32x2, 64x2 at width 1.0): every width made
    divisible by 8; a residual only where the stride is 1 and the width is kept."""
    model = build_model(MobileNetV2Options(width_multiplier=0.5, dropout=0.1), (32, 32, 3), 10)
    assert model.get_layer("stem_conv").filters == 16
    assert model.get_layer("stem_conv").strides == (1, 1)
    projects = [model.get_layer(f"block{index}_project").filters for index in range(7)]
    assert projects == [8, 16, 16, 16, 16, 32, 32]
    assert [model.get_layer(f"block{index}_dw").strides for index in range(7)] == [
        (1, 1), (2, 2), (1, 1), (2, 2), (1, 1), (2, 2), (1, 1)]
    assert [layer.name for layer in _layers_of(model, "Add")] == [
        "block2_add", "block4_add", "block6_add"]
    # Expansion 1 in the first block (no expand layer), 6 in the others: 6x the input.
    expands = {layer.name: layer.filters for layer in _layers_of(model, "Conv2D")
               if layer.name.endswith("_expand")}
    assert expands == {"block1_expand": 48, "block2_expand": 96, "block3_expand": 96,
                       "block4_expand": 96, "block5_expand": 96, "block6_expand": 192}
    assert model.get_layer("head_conv").filters == 64
    assert {layer.max_value for layer in _layers_of(model, "ReLU")} == {6.0}
    assert {layer.momentum for layer in _layers_of(model, "BatchNormalization")} == {0.9}
    assert _layers_of(model, "Dropout")[0].rate == 0.1
    assert model.name == "mobilenet_v2"
    # Width 0.35: stem 11.2, head 44.8 and the blocks' 5.6, 8.4, 11.2, 22.4 channels
    # are not multiples of 8; each is made one.
    narrow = build_model(MobileNetV2Options(width_multiplier=0.35), (32, 32, 3), 10)
    assert (narrow.get_layer("stem_conv").filters, narrow.get_layer("head_conv").filters) == (16, 48)
    assert [narrow.get_layer(f"block{index}_project").filters for index in range(7)] == [
        8, 8, 8, 16, 16, 24, 24]


class _ScriptedModel:
    """What EpochSelector reads of a model, scripted epoch by epoch: the val logits it
    predicts, its weights (the epoch number) and its optimiser's learning rate."""

    def __init__(self, logits: list[np.ndarray]) -> None:
        self.logits, self.epoch, self.stop_training = logits, 0, False
        self.restored: list[np.ndarray] | None = None
        self.optimizer = type("Optimizer", (), {"learning_rate": np.float32(0.25)})()

    def predict(self, images: np.ndarray, batch_size: int, verbose: int) -> np.ndarray:
        assert batch_size == 256
        return self.logits[self.epoch]

    def get_weights(self) -> list[np.ndarray]:
        return [np.array([self.epoch])]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.restored = weights


def test_the_epoch_selector_keeps_the_best_epoch_and_stops_after_patience() -> None:
    """Val labels [0, 1, 1, 0]; epochs scored (accuracy, loss): 0.5; 0.75; 0.75 with a
    lower loss (the better one); 0.75 with the same loss (not better); 0.5 — patience 2
    stops at the fifth epoch, the third kept."""
    from tasks.train import EpochSelector, cross_entropy

    labels = np.array([0, 1, 1, 0])

    def logits(correct: int, margin: float) -> np.ndarray:
        rows = [[margin, 0.0] if label == 0 else [0.0, margin] for label in labels]
        for row in rows[correct:]:
            row.reverse()
        return np.array(rows)

    scripted = [logits(2, 1.0), logits(3, 0.5), logits(3, 1.0), logits(3, 1.0), logits(2, 3.0)]
    model = _ScriptedModel(scripted)
    selector = EpochSelector(np.zeros((4, 1)), np.zeros((4, 1)), labels, batch_size=2,
                             patience=2, reestimate_batch_norm=False)
    selector.set_model(model)
    selector.on_train_begin()
    assert selector.reestimate is None
    seen = []
    for epoch in range(5):
        model.epoch = epoch
        logs: dict = {}
        selector.on_epoch_end(epoch, logs)
        seen.append((logs["val_accuracy"], logs["val_loss"], logs["learning_rate"],
                     selector.best_epoch, selector.waited, model.stop_training))
    loss = [cross_entropy(batch, labels) for batch in scripted]
    assert seen == [(0.5, loss[0], 0.25, 1, 0, False), (0.75, loss[1], 0.25, 2, 0, False),
                    (0.75, loss[2], 0.25, 3, 0, False), (0.75, loss[3], 0.25, 3, 1, False),
                    (0.5, loss[4], 0.25, 3, 2, True)]
    selector.restore()
    assert model.restored is not None and model.restored[0].tolist() == [2]


def test_majority_rate_and_reference_results() -> None:
    from tasks.train import majority_rate, reference_results

    assert majority_rate(np.array([2, 0, 2, 1, 2, 0, 2])) == 4 / 7
    assert majority_rate(np.array([], np.int64)) == 0.0
    outputs = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    results = reference_results("classification", outputs, np.array([1, 1, 1]))
    assert results == [1, 0, 1] and all(type(value) is int for value in results)


def test_balanced_weights_of_a_class_missing_from_the_labels_are_zero_not_infinite() -> None:
    from tasks.train import class_weights

    weights = class_weights(np.array([1, 1, 1, 3]), 5, "balanced")
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, [0.0, 4 / 15, 0.0, 4 / 5, 0.0], rtol=1e-6)


def test_the_detectors_epochs_report_its_loss_and_map_and_its_early_stop_says_map() -> None:
    from tasks.core import notices
    from tasks.train.progress import DETECTOR_FIGURES, EpochProgress

    seen: list[notices.Notice] = []
    callback = EpochProgress(3, 5, DETECTOR_FIGURES, "val mAP@0.5")
    with notices.listening(seen.append):
        callback.on_train_begin()
        callback.on_epoch_end(0, {"loss": 6.5, "val_loss": 5.25, "val_map50": 0.125,
                                  "accuracy": 0.9})
        callback.on_train_end()
    assert [notice.line() for notice in seen] == [
        "train: 0/3", "train: 1/3 (loss 6.500 val_loss 5.250 val_mAP50 0.125)",
        "train: 1/3 (stopped early: no better val mAP@0.5 for 5 epochs)"]
