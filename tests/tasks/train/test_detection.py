"""Training the grid detector (tasks/train/detection.py, tasks/models/architectures.py's
``tiny_detector``): targets from hand-made boxes, the round trip through the detection
kind's decoder, the loss, the model's shape and ops, learning on synthetic scenes, int8
conversion (LiteRT and TFLite Micro), and the train step for data prepared for detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.core.contracts.prepared import PreparedMeta, pad_boxes, write_meta, write_split
from tasks.core.errors import TrainingError
from tasks.core.files import read_json
from tasks.device.kinds import detection as kind
from tasks.models.architectures import (OBJECTNESS_PRIOR, SmallCNNOptions, TinyDetectorOptions,
                                        build_model)
from tasks.models.detection_loss import LossWeights, detection_loss, encode_targets, mean_loss
from tasks.train.detection import DetectionScore, check_learned

SURE = 30.0  # a logit that is certain: sigmoid(30) = 1 - 1e-13


def _logit(probability: np.ndarray) -> np.ndarray:
    probability = np.asarray(probability, np.float64)
    with np.errstate(divide="ignore"):  # an offset of 0 (a centre on a cell's edge): -inf
        return np.log(probability / (1.0 - probability))


def perfect_outputs(targets: np.ndarray) -> np.ndarray:
    """The raw grid outputs whose decoding is exactly ``targets``: objectness and class
    logits of +-SURE, box fields through the inverse sigmoid."""
    outputs = np.where(targets > 0.5, SURE, -SURE).astype(np.float64)
    positive = targets[..., 0] == 1.0
    outputs[positive, 1:5] = _logit(targets[positive, 1:5])
    return outputs


# ------------------------------------------------------------------------------ targets

def test_a_box_goes_to_the_cell_of_its_centre_with_its_offsets_size_and_class() -> None:
    # Grid 4 (cells of 0.25). Centre (0.4, 0.7): column 1 (offset 0.6), row 2 (offset 0.8).
    labels = pad_boxes([np.array([[2, 0.3, 0.55, 0.5, 0.85]]), np.zeros((0, 5))])
    targets = encode_targets(labels, grid=4, classes=3)
    assert targets.shape == (2, 4, 4, 8) and targets.dtype == np.float32
    np.testing.assert_allclose(targets[0, 2, 1], [1.0, 0.6, 0.8, 0.2, 0.3, 0, 0, 1], atol=1e-6)
    others = np.ones((4, 4), bool)
    others[2, 1] = False
    assert not targets[0][others].any()
    assert not targets[1].any()  # an image without objects: every cell empty


def test_a_centre_on_the_far_edge_goes_to_the_last_cell() -> None:
    # A zero-width box on the right and bottom edges: centre (1.0, 1.0).
    targets = encode_targets(pad_boxes([np.array([[0, 1.0, 1.0, 1.0, 1.0]])]), grid=4, classes=1)
    np.testing.assert_allclose(targets[0, 3, 3], [1.0, 1.0, 1.0, 0.0, 0.0, 1.0])


def test_two_centres_in_one_cell_keep_the_larger_box_whatever_the_order() -> None:
    small = [0, 0.05, 0.05, 0.15, 0.15]
    large = [1, 0.0, 0.0, 0.2, 0.2]
    for order in ([small, large], [large, small]):
        targets = encode_targets(pad_boxes([np.array(order)]), grid=4, classes=2)
        np.testing.assert_allclose(targets[0, 0, 0], [1.0, 0.4, 0.4, 0.2, 0.2, 0, 1], atol=1e-6)
        assert targets[0, ..., 0].sum() == 1.0


def test_encoded_boxes_decode_back_through_the_detection_kind() -> None:
    """The targets, written as the raw outputs they stand for, decode (the detection
    kind's grid layout, NMS included) to the very boxes and classes encoded."""
    from sklearn.datasets import load_digits

    from tasks.prepare.scenes import detection_scenes

    digits = load_digits()
    drawn = detection_scenes(digits.images, digits.target, 30, (96, 96), seed=3)
    labels = pad_boxes(drawn.boxes)
    targets = encode_targets(labels, grid=12, classes=10)
    checked = 0
    for outputs, boxes in zip(perfect_outputs(targets), drawn.boxes):
        decoded = kind.KIND.decode(outputs[None])
        centres = np.floor((boxes[:, [1, 2]] + boxes[:, [3, 4]]) / 2 * 12)
        if len(np.unique(centres, axis=0)) < len(boxes):
            continue  # two centres share a cell: one box is kept (the test above)
        order = np.lexsort(decoded[:, 2:4].T[::-1])
        expected = boxes[np.lexsort(boxes[:, 1:3].T[::-1])]
        np.testing.assert_array_equal(decoded[order, 0], expected[:, 0])
        np.testing.assert_allclose(decoded[order, 2:6], expected[:, 1:5], atol=1e-6)
        np.testing.assert_allclose(decoded[:, 1], 1.0, atol=1e-9)
        checked += 1
    assert checked >= 20


# --------------------------------------------------------------------------------- loss

def _loss(targets: np.ndarray, outputs: np.ndarray, weights: LossWeights = LossWeights()) -> float:
    return mean_loss(detection_loss(weights), targets.astype(np.float32), outputs.astype(np.float32))


@pytest.fixture()
def one_box() -> tuple[np.ndarray, np.ndarray]:
    targets = encode_targets(pad_boxes([np.array([[1, 0.3, 0.55, 0.5, 0.85]])]), grid=4, classes=3)
    return targets, perfect_outputs(targets)


def test_the_loss_of_perfect_outputs_is_zero(one_box) -> None:
    targets, outputs = one_box
    assert _loss(targets, outputs) < 1e-5


def test_a_shifted_box_costs_the_box_weight_times_its_l1_error(one_box) -> None:
    targets, outputs = one_box
    shifted = outputs.copy()
    shifted[0, 2, 1, 1] = _logit(0.6 + 0.25)  # the centre's x offset 0.6 -> 0.85
    weights = LossWeights(box=3.0)
    assert _loss(targets, shifted, weights) == pytest.approx(3.0 * 0.25, abs=1e-4)


def test_a_missed_object_costs_the_positive_weight_over_the_cells(one_box) -> None:
    targets, outputs = one_box
    missed = outputs.copy()
    missed[0, 2, 1, 0] = -SURE
    # Cross-entropy SURE on one of 16 cells, weighed `positive`.
    assert _loss(targets, missed, LossWeights(positive=4.0)) == pytest.approx(4.0 * SURE / 16, rel=1e-4)
    false_alarm = outputs.copy()
    false_alarm[0, 0, 0, 0] = SURE  # an empty cell: weight 1
    assert _loss(targets, false_alarm, LossWeights(positive=4.0)) == pytest.approx(SURE / 16, rel=1e-4)


def test_a_wrong_class_costs_its_cross_entropy_on_positive_cells_only(one_box) -> None:
    targets, outputs = one_box
    wrong = outputs.copy()
    wrong[0, 2, 1, 5:] = [SURE, -SURE, -SURE]  # class 0 instead of 1
    # -log softmax of the true class: 2 * SURE (+ log(1 + e^-60 + ...)).
    assert _loss(targets, wrong, LossWeights(classes=0.5)) == pytest.approx(0.5 * 2 * SURE, rel=1e-4)
    elsewhere = outputs.copy()
    elsewhere[0, 0, 0, 5:] = [SURE, -SURE, SURE]  # an empty cell's class: no loss
    elsewhere[0, 0, 0, 1:5] = 5.0  # nor its box
    assert _loss(targets, elsewhere) < 1e-5


# -------------------------------------------------------------------------------- model

def test_the_detector_answers_a_grid_of_raw_box_fields_per_image() -> None:
    model = build_model(TinyDetectorOptions(), (96, 96, 3), 10)
    assert model.output_shape == (None, 12, 12, 15)
    assert model.predict(np.zeros((1, 96, 96, 3), np.float32), verbose=0).shape == (1, 12, 12, 15)
    coarse = build_model(TinyDetectorOptions(stride=16), (96, 96, 3), 10)
    assert coarse.output_shape == (None, 6, 6, 15)
    head = model.get_layer("detections")
    assert head.get_config()["activation"] == "linear"  # raw: the decoder applies sigmoids
    bias = np.asarray(head.bias)
    assert bias[0] == pytest.approx(np.log(OBJECTNESS_PRIOR / (1 - OBJECTNESS_PRIOR)), abs=1e-5)
    assert not bias[1:].any()
    # Only what every converter and TFLite Micro run.
    assert {layer.__class__.__name__ for layer in model.layers} == {
        "InputLayer", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "Add"}


def test_the_width_multiplier_scales_the_detector() -> None:
    narrow = build_model(TinyDetectorOptions(width_multiplier=0.25), (96, 96, 3), 10)
    wide = build_model(TinyDetectorOptions(width_multiplier=1.0), (96, 96, 3), 10)
    assert narrow.count_params() * 2 < wide.count_params()


@pytest.mark.parametrize("shape", [(96, 64, 3), (100, 100, 3)])
def test_an_input_the_grid_does_not_divide_is_refused(shape: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="square input whose side is a multiple of its stride 8"):
        build_model(TinyDetectorOptions(), shape, 10)


def _scenes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    from tasks.prepare.scenes import detection_scenes

    digits = load_digits()
    drawn = detection_scenes(digits.images, digits.target, count, (96, 96), seed=seed)
    return drawn.images, pad_boxes(drawn.boxes)


def test_a_few_epochs_on_synthetic_scenes_lower_the_loss() -> None:
    from tasks.config import TrainParams
    from tasks.models.seeding import seed_training
    from tasks.train.detection import fit_detector

    train, val = _scenes(200, seed=0), _scenes(40, seed=1)
    seed_training(0)
    model = build_model(TinyDetectorOptions(), (96, 96, 3), 10)
    targets = encode_targets(train[1], 12, 10)
    before = mean_loss(detection_loss(), targets, model.predict(train[0], verbose=0))
    history, selector = fit_detector(model, TrainParams(epochs=3, early_stopping_patience=5),
                                     {"train": train, "val": val}, 10)
    after = mean_loss(detection_loss(), targets, model.predict(train[0], verbose=0))
    assert after < 0.9 * before, (before, after)
    assert len(history.history["loss"]) == 3
    assert history.history["val_loss"][-1] < history.history["val_loss"][0]
    assert set(history.history) >= {"loss", "val_loss", "val_map50", "learning_rate"}


def test_training_ends_on_the_best_epoch_judged_not_the_last() -> None:
    """A learning rate far too high and a patience of one: training stops at the first
    epoch whose val loss is no lower, and the model handed back is the epoch before's
    (its val loss), not the last one's. The stop comes from the loss the run saw, which
    differs by CPU (oneDNN's kernels): 4 to 6 epochs of 12 on the machines tried; twelve
    epochs each lower than the last would fail the test, not pass it unexercised."""
    from tasks.config import TrainParams
    from tasks.models.seeding import seed_training
    from tasks.train.detection import fit_detector

    train, val = _scenes(64, seed=4), _scenes(16, seed=5)
    seed_training(0)
    model = build_model(TinyDetectorOptions(), (96, 96, 3), 10)
    history, selector = fit_detector(
        model, TrainParams(epochs=12, batch_size=16, learning_rate=0.5, early_stopping_patience=1),
        {"train": train, "val": val}, 10)
    val_losses = history.history["val_loss"]
    assert history.history["val_map50"] == [0.0] * len(val_losses)  # judged by the loss alone
    assert len(val_losses) < 12, val_losses  # stopped by the patience
    assert selector.best_epoch == int(np.argmin(val_losses)) + 1 == len(val_losses) - 1, \
        val_losses
    now = mean_loss(detection_loss(), encode_targets(val[1], 12, 10), model.predict(val[0], verbose=0))
    assert now == pytest.approx(min(val_losses), rel=1e-5)
    assert now != pytest.approx(val_losses[-1], rel=1e-5)


def test_the_detector_converts_to_int8_tflite_and_runs_in_tflite_micro(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter
    from tflite_micro.python.tflite_micro import runtime as tflm

    from tasks.models.formats.tflite import convert_tflite
    from tasks.models.formats.tflm import measure_arena_bytes

    model = build_model(TinyDetectorOptions(), (96, 96, 3), 10)
    model.export(str(tmp_path / "saved_model"), format="tf_saved_model", verbose=False)
    images, _ = _scenes(16, seed=2)
    converted = convert_tflite(tmp_path / "saved_model", "int8", images)
    interpreter = Interpreter(model_content=converted)
    ops = {detail["op_name"] for detail in interpreter._get_ops_details()}
    assert ops <= {"QUANTIZE", "DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD"}, ops
    interpreter.allocate_tensors()
    given, answered = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert given["dtype"] == np.int8 and answered["dtype"] == np.int8
    assert tuple(answered["shape"]) == (1, 12, 12, 15)
    scale, zero = given["quantization"]
    quantised = np.clip(np.round(images[:1] / scale + zero), -128, 127).astype(np.int8)
    interpreter.set_tensor(given["index"], quantised)
    interpreter.invoke()
    raw = interpreter.get_tensor(answered["index"])
    out_scale, out_zero = answered["quantization"]
    reference = model.predict(images[:1], verbose=0)
    error = np.abs((raw.astype(np.float32) - out_zero) * out_scale - reference)
    assert error.mean() < 0.05 * np.ptp(reference), (error.mean(), np.ptp(reference))

    micro = tflm.Interpreter.from_bytes(converted, arena_size=measure_arena_bytes(converted))
    micro.set_input(quantised, 0)
    micro.invoke()
    assert micro.get_output(0).shape == (1, 12, 12, 15)
    assert np.abs(micro.get_output(0).astype(int) - raw.astype(int)).max() <= 1


class _ScriptedModel:
    """What MapSelector reads of a model, scripted epoch by epoch: the val outputs it
    predicts, its weights (the epoch number) and its optimiser's learning rate."""

    def __init__(self, outputs: list[np.ndarray]) -> None:
        self.outputs, self.epoch, self.stop_training = outputs, 0, False
        self.restored: list[np.ndarray] | None = None
        self.optimizer = type("Optimizer", (), {"learning_rate": np.float32(0.5)})()

    def predict(self, images: np.ndarray, batch_size: int, verbose: int) -> np.ndarray:
        return self.outputs[self.epoch]

    def get_weights(self) -> list[np.ndarray]:
        return [np.array([self.epoch])]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.restored = weights


def test_the_map_selector_keeps_the_best_epoch_and_stops_after_patience() -> None:
    """Epochs: nothing found (mAP 0); every box found but unsure (mAP 1, a higher loss);
    found and sure (mAP 1, lower loss: the best); the same again (not better); nothing
    again: patience 2 stops at the fifth, the third kept."""
    from tasks.train.detection import MapSelector

    labels = pad_boxes([np.array([[0, 0.3, 0.55, 0.5, 0.85]]),
                        np.array([[2, 0.1, 0.1, 0.2, 0.3], [1, 0.6, 0.6, 0.9, 0.8]])])
    targets = encode_targets(labels, grid=4, classes=3)
    sure = perfect_outputs(targets)
    unsure = sure.copy()
    unsure[..., 0] = np.where(targets[..., 0] == 1.0, 3.0, -3.0)
    nothing = sure.copy()
    nothing[..., 0] = -SURE
    scripted = [nothing, unsure, sure, sure, nothing]
    model = _ScriptedModel(scripted)
    loss = detection_loss()
    selector = MapSelector(np.zeros((2, 1)), np.zeros((2, 1)), labels, targets, loss,
                           batch_size=2, patience=2)
    selector.set_model(model)
    seen = []
    for epoch in range(5):
        model.epoch = epoch
        logs: dict = {}
        selector.on_epoch_end(epoch, logs)
        seen.append((logs["val_map50"], logs["val_loss"], logs["learning_rate"],
                     selector.best_epoch, selector.waited, model.stop_training))
    losses = [mean_loss(loss, targets, outputs) for outputs in scripted]
    assert losses[2] < losses[1]
    assert seen == [(0.0, losses[0], 0.5, 1, 0, False), (1.0, losses[1], 0.5, 2, 0, False),
                    (1.0, losses[2], 0.5, 3, 0, False), (1.0, losses[3], 0.5, 3, 1, False),
                    (0.0, losses[4], 0.5, 3, 2, True)]
    selector.restore()
    assert model.restored is not None and model.restored[0].tolist() == [2]


# ----------------------------------------------------------------------------- the step

def _prepared(root: Path, counts: dict[str, int], same_scenes: bool = False) -> Path:
    prepared = root / "prepared"
    prepared.mkdir()
    for index, (split, count) in enumerate(counts.items()):
        write_split(prepared, split, *_scenes(count, seed=10 + (0 if same_scenes else index)))
    write_meta(prepared, PreparedMeta(
        source="digit_scenes", classes=[str(digit) for digit in range(10)],
        input_shape=[96, 96, 3], normalisation="unit", color="rgb", task="detection", seed=1,
        counts=counts, per_class={}, per_split_class={}, warnings=[], skipped_count=0,
        skipped=[], sha256={}))
    return prepared


def test_a_classifier_is_refused_for_detection_data_and_the_detector_for_classes(
        tmp_path: Path) -> None:
    from tasks.train import train

    prepared = _prepared(tmp_path, {"train": 2, "val": 2, "test": 2})
    with pytest.raises(TrainingError, match="'small_cnn' is a classification model; the data "
                       "is prepared for detection .* use tiny_detector"):
        train(SmallCNNOptions(), _train_params(1), prepared, tmp_path / "model", tmp_path / "m")
    meta = read_json(prepared / "meta.json")
    meta["task"] = "classification"
    (prepared / "meta.json").write_text(__import__("json").dumps(meta))
    with pytest.raises(TrainingError, match="'tiny_detector' is a detection model"):
        train(TinyDetectorOptions(), _train_params(1), prepared, tmp_path / "model", tmp_path / "m")
    # A kind with no trainer of its own (a toy kind) trains as classification does.
    meta["task"] = "toy"
    (prepared / "meta.json").write_text(__import__("json").dumps(meta))
    with pytest.raises(TrainingError, match="'tiny_detector' is a detection model; the data is "
                       "prepared for toy .* use mobilenet_v2 or small_cnn"):
        train(TinyDetectorOptions(), _train_params(1), prepared, tmp_path / "model", tmp_path / "m")
    assert not (tmp_path / "model").exists()


def _train_params(epochs: int, batch_size: int = 32) -> "object":
    from tasks.config import TrainParams

    return TrainParams(epochs=epochs, batch_size=batch_size, learning_rate=3e-3,
                       early_stopping_patience=50)


def test_a_detector_that_finds_nothing_did_not_learn() -> None:
    with pytest.raises(TrainingError, match=r"did not learn: validation mAP@0.5 0.000 "
                       r"\[0.000, 0.000\] on 40"):
        check_learned(DetectionScore(0.0, 0.0, (0.0, 0.0), 40))
    check_learned(DetectionScore(0.2, 0.1, (0.01, 0.3), 40))


EPOCHS = 12


def test_the_train_step_trains_the_detector_and_records_its_map_and_curves(tmp_path: Path) -> None:
    """Data prepared for detection trains the detector: the model, its reference (each
    test image's result, as the detection kind scores it) and its metrics (mAP per split
    with intervals, curves per epoch), each agreeing with the model written. The same
    64 scenes in every split: the step's plumbing is tested, not generalisation."""
    import keras

    from tasks.train import train

    prepared = _prepared(tmp_path, {"train": 64, "val": 64, "test": 64}, same_scenes=True)
    result = train(TinyDetectorOptions(), _train_params(EPOCHS, batch_size=16), prepared, tmp_path / "model",
                   tmp_path / "metrics")
    metrics = read_json(tmp_path / "metrics" / "train.json")
    assert metrics["test_map50"] == result.test.map50 > 0.0
    assert metrics["val_map50_low"] > 0.0 and metrics["test_samples"] == 64
    assert metrics["architecture"] == "tiny_detector" and metrics["grid"] == 12
    assert metrics["post_processing"] == {"format": "grid", "score_threshold": 0.25,
                                          "iou_threshold": 0.45, "max_detections": 100}
    assert set(metrics["test_ap50"]) <= {str(digit) for digit in range(10)}
    history = read_json(tmp_path / "metrics" / "train_history.json")
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    assert max(row["val_map50"] for row in history) == metrics["val_map50"]
    assert history[-1]["loss"] < history[0]["loss"]

    model = keras.models.load_model(tmp_path / "model" / "model.keras")
    images, labels = np.load(prepared / "test.npz")["x"], np.load(prepared / "test.npz")["y"]
    from tasks.train.detection import evaluate
    rescored = evaluate(model.predict(images, verbose=0), labels, interval=False)
    assert rescored.map50 == pytest.approx(metrics["test_map50"], abs=1e-9)
    written = read_json(tmp_path / "model" / "reference.json")
    reference = written["test_correct"]
    assert len(reference) == 64
    assert kind.scores(reference).map50 == pytest.approx(metrics["test_map50"], abs=1e-12)
    # Select and convert score these records as the task says: as a mAP, not as 1/0.
    from tasks.core.accuracy import reference_on_first

    assert written["task"] == "detection"
    assert reference_on_first(reference, 0, written["task"]) == pytest.approx(
        metrics["test_map50"], abs=1e-12)
    assert (tmp_path / "model" / "saved_model" / "saved_model.pb").is_file()
    assert "mAP@0.5" in result.describe()


# ------------------------------------------------- one decoding: the reference and variants
def threshold_scene() -> tuple[np.ndarray, np.ndarray]:
    """Raw grid outputs (grid 4, 3 classes) and labels of two images whose mAP@0.5 is 0.75
    at a score threshold of 0.25 and 0.5 at 0.5: image 0's class-0 object found at 0.9
    and a class-1 box where there is none at 0.6; image 1's class-1 object found at 0.35."""
    labels = pad_boxes([np.array([[0, 0.3, 0.55, 0.5, 0.85]]),
                        np.array([[1, 0.6, 0.1, 0.9, 0.3]])])
    outputs = perfect_outputs(encode_targets(labels, grid=4, classes=3))
    outputs[0, 2, 1, 0] = _logit(0.9)
    outputs[1, 0, 3, 0] = _logit(0.35)
    outputs[0, 0, 0, :5] = [_logit(0.6), 0.0, 0.0, -1.0, -1.0]  # an empty cell proposes
    outputs[0, 0, 0, 5:] = [-SURE, SURE, -SURE]                  # a class-1 box
    return outputs, labels


@pytest.mark.parametrize("threshold, expected", [(0.25, 0.75), (0.5, 0.5)])
def test_a_changed_score_threshold_moves_the_reference_and_the_variants_alike(
        threshold: float, expected: float) -> None:
    """data.detection, read by train (the reference's records and mAP) and by convert (the
    variants' spec entry): the same outputs score the same under both, and a threshold
    moves both. Two images, grid 4, 3 classes: image 0's class-0 object found at 0.9 and a
    class-1 box where there is none at 0.6; image 1's class-1 object found at 0.35. At
    0.25 class 1 ranks the false box first (AP 0.5), class 0 is found (AP 1): mAP 0.75;
    at 0.5 the 0.35 box is gone: class 1 AP 0, mAP 0.5."""
    from tasks import convert as convert_step
    from tasks.config import DetectionDecoding, decoding_spec
    from tasks.core.accuracy import reference_on_first
    from tasks.train.detection import evaluate

    outputs, labels = threshold_scene()
    targets = encode_targets(labels, grid=4, classes=3)
    decoding = DetectionDecoding(score_threshold=threshold)

    reference = evaluate(outputs, labels, spec=decoding_spec(decoding))
    assert reference.map50 == pytest.approx(expected, abs=1e-12)
    assert reference_on_first(reference.records, 0, "detection") == pytest.approx(expected,
                                                                                  abs=1e-12)
    spec = {"task": "detection",
            **convert_step.task_entries("detection", outputs.astype(np.float32), 3, decoding)}
    assert spec["detection"]["score_threshold"] == threshold
    detector = kind.KIND
    variant = detector.metric(detector.per_sample(
        [detector.decode(output.reshape(-1), spec) for output in outputs], list(labels)))
    assert variant == pytest.approx(expected, abs=1e-12)
    # The epochs are judged on val under it too (the epoch kept is the one it scores best).
    from tasks.train.detection import MapSelector

    selector = MapSelector(np.zeros((2, 1)), np.zeros((2, 1)), labels, targets, detection_loss(),
                           batch_size=2, patience=2, spec=decoding_spec(decoding))
    assert selector.judge(outputs)[1]["val_map50"] == pytest.approx(expected, abs=1e-12)
    # No section stated: the defaults, on both sides (the 0.25 case).
    assert evaluate(outputs, labels, spec=decoding_spec(None)).map50 == pytest.approx(0.75)
