"""Step ``train``: prepared data -> a trained Keras model and its fp32 reference accuracy.

Reads params ``model``, ``train`` and, for a detector, ``data.detection`` (the decoding
its reference is scored under), and ``data/prepared/``. Writes
``models/base/model.keras``, ``models/base/saved_model/`` (what the converters read),
``models/base/reference.json`` (each test image's result as the kind of task (``data.task``)
scores it, in order: classification, which the model gets right),
``metrics/train.json`` (train, val and test accuracy with 95% intervals; the test
accuracy is the fp32 reference every variant is compared with) and
``metrics/train_history.json`` (per-epoch curves for ``dvc plots`` and MLflow).

Data prepared for detection (the prepared meta's ``task``) trains the grid detector
instead (``model.architecture: tiny_detector``, :mod:`tasks.train.detection`): the same
files, with mAP in place of accuracy. Each kind of task trains through :data:`TRAINERS`,
and an architecture made for another kind than the data's is refused. A detector you bring
(``model: {source: file, task: detection, format: yolo}``, an Ultralytics YOLO export) is
adopted as a classifier file is: checked, scored by mAP (the detection kind's decoding of
its layout), written with that layout in ``source.json`` for convert.

Training is seeded and deterministic (:mod:`tasks.models.seeding`: the same params and
data give bit-identical weights on one machine) and reports each epoch as progress
(:mod:`tasks.core.notices`). After every epoch the batch-norm
statistics are re-estimated (:mod:`tasks.models.batch_norm`) and the model is judged as it will
be used, in inference mode, on the val split; the best epoch is restored at the end.
A model whose validation accuracy is not clearly above the majority-class rate did not
learn: the step fails with one line and leaves the previous model and metrics in place.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from tasks.core import device_code
from tasks.models import batch_norm
from tasks.core.accuracy import accuracy_interval, format_accuracy, wilson_interval
from tasks.models.architectures import ARCHITECTURES, ModelOptions, build_model
from tasks.models.augmenter import Augmenter, augmenter
from tasks.models.seeding import seed_training
from tasks.config import DetectionDecoding, TrainParams, decoding_spec
from tasks.train.model_input import arrange_batch
from tasks.train.progress import EpochProgress
from tasks.train.selection import PREDICT_BATCH, BestEpochSelector
from tasks.train.schedules import LR_SCHEDULES
from tasks.models.model_file import (FineTuneOptions, ModelFile, ModelFileError, ModelFileOptions,
                                     check_fits, check_task, feature_layer, input_spec,
                                     inspect_model_file, load_keras)
from tasks.core.contracts.prepared import DEFAULT_TASK, PreparedMeta, load_split, read_meta
from tasks.core.errors import TrainingError
from tasks.core.files import atomic_output_dir, sha256_tree, write_json



@dataclass(frozen=True)
class SplitScore:
    """Accuracy of the restored model on one split, in inference mode."""

    accuracy: float
    samples: int

    @property
    def interval(self) -> tuple[float, float]:
        return accuracy_interval(self.accuracy, self.samples)

    def __str__(self) -> str:
        return format_accuracy(self.accuracy, self.samples)


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    train: SplitScore
    val: SplitScore
    test: SplitScore
    best_epoch: int
    epochs_run: int

    @property
    def test_accuracy(self) -> float:
        return self.test.accuracy

    @property
    def val_accuracy(self) -> float:
        return self.val.accuracy

    def describe(self) -> str:
        """One line for the console: accuracy per split with 95% intervals, epochs."""
        return (f"train {self.train}, val {self.val}, test {self.test} (95% intervals); "
                f"epoch {self.best_epoch} of {self.epochs_run} kept")


class ShuffledBatches(keras.utils.PyDataset):
    """The train split in a new seeded order each epoch, augmented, with per-image weights.

    The order and the augmentation of batch ``i`` in epoch ``e`` depend only on (seed,
    e, i): a run is reproducible, whatever Keras prefetches."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, weights: np.ndarray,
                 batch_size: int, augment: Augmenter, seed: int) -> None:
        super().__init__()
        self.images, self.targets, self.weights = images, targets, weights
        self.batch_size, self.augment, self.seed = batch_size, augment, seed
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.images))
        chosen = order[index * self.batch_size:(index + 1) * self.batch_size]
        images = self.augment(self.images[chosen], np.random.default_rng((self.seed, self.epoch, index)))
        return images, self.targets[chosen], self.weights[chosen]

    def on_epoch_end(self) -> None:
        self.epoch += 1


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of integer ``labels`` under ``logits`` (no label smoothing, so
    epochs trained with and without it compare)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


def epoch_key(accuracy: float, loss: float) -> tuple[float, float]:
    """What makes an epoch better: higher val accuracy, then lower val loss."""
    return accuracy, -loss


class EpochSelector(BestEpochSelector):
    """Judges each epoch as the model will be used and keeps the best one.

    At the end of every epoch: re-estimate batch-norm statistics on the (unaugmented)
    train images, then measure val loss and accuracy in inference mode and put them in
    the epoch's logs (``val_loss``, ``val_accuracy``, ``learning_rate``) for the callbacks
    after it. The best epoch has the highest val accuracy and, among equal accuracies,
    the lowest val loss: on digits' 270 val images accuracy moves in steps of 0.0037 and
    several epochs tie at the top, and the loss then picks the one whose predictions are
    least overconfident. Training stops after ``patience`` epochs without a better one.
    """

    def __init__(self, train_images: np.ndarray, val_images: np.ndarray,
                 val_labels: np.ndarray, batch_size: int, patience: int,
                 reestimate_batch_norm: bool = True) -> None:
        super().__init__(train_images, val_images, batch_size, patience, reestimate_batch_norm)
        self.val_labels = val_labels

    def judge(self, outputs: np.ndarray) -> tuple[tuple[float, float], dict[str, float]]:
        accuracy = float(np.mean(np.argmax(outputs, axis=1) == self.val_labels))
        loss = cross_entropy(outputs, self.val_labels)
        return epoch_key(accuracy, loss), {"val_loss": loss, "val_accuracy": accuracy}


def class_weights(labels: np.ndarray, classes: int, policy: str) -> np.ndarray:
    """One weight per class: all 1 (``none``) or n / (classes * count) (``balanced``, as
    scikit-learn's), so each class adds the same total to the loss."""
    if policy == "none":
        return np.ones(classes, np.float32)
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    return np.where(counts > 0, len(labels) / (classes * np.maximum(counts, 1)), 0.0).astype(np.float32)


def _score(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> tuple[SplitScore, np.ndarray]:
    """The model's class accuracy on one split (what it was trained for), and its
    outputs."""
    outputs = model.predict(images, batch_size=PREDICT_BATCH, verbose=0)
    correct = np.argmax(outputs, axis=1) == labels
    return SplitScore(float(np.mean(correct)) if len(correct) else 0.0, len(correct)), outputs


def reference_results(task: str, outputs: np.ndarray, labels: np.ndarray) -> list[int | float]:
    """Each test image's result, in order, as the kind of task scores the model's outputs
    (classification: 1 right, 0 wrong): ``reference.json``'s ``test_correct``, from which
    convert and select take the reference score on the first N images a device saw."""
    kind = device_code.task_kinds().get(task)
    results = kind.per_sample([kind.decode(row) for row in outputs], labels)
    return [int(value) if float(value).is_integer() else float(value) for value in results]


def majority_rate(labels: np.ndarray) -> float:
    """The accuracy of always answering the most common class of ``labels``."""
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0


def check_learned(train_score: SplitScore, val_score: SplitScore, val_labels: np.ndarray) -> None:
    """Refuse (:class:`TrainingError`) a model whose val accuracy is not clearly above
    what always answering the majority class scores: the lower end of its 95% interval
    must be above that rate."""
    rate = majority_rate(val_labels)
    low, _ = wilson_interval(round(val_score.accuracy * val_score.samples), val_score.samples)
    if low <= rate:
        raise TrainingError(
            f"train: the model did not learn: validation accuracy {val_score} is not clearly "
            f"above the majority-class rate {rate:.2f} (train accuracy {train_score}); try "
            "more images per class, train.augmentation, more epochs or a lower "
            "learning_rate; the previous model and metrics are kept")


def train(model_params: ModelOptions, train_params: TrainParams, prepared: Path,
          out_dir: Path, metrics_dir: Path, decoding: DetectionDecoding | None = None) -> Any:
    """Train, select the best epoch, check that the model learned, evaluate on the test
    split, and write the model and its metrics (only when all of that succeeded): a
    classifier (:func:`train_classifier`, a :class:`TrainResult`) or, for data prepared
    for detection, the detector (:mod:`tasks.train.detection`, a ``DetectorResult``), as
    :data:`TRAINERS` says, a detector scored under ``decoding`` (``data.detection``, the
    one convert writes into every variant's spec; None: the defaults). An architecture of
    another kind of task than the data's is a TrainingError. A model you bring is checked,
    maybe fine-tuned, and evaluated instead (:func:`adopt`)."""
    if isinstance(model_params, ModelFileOptions):
        return adopt(model_params, train_params, prepared, out_dir, metrics_dir, decoding)
    meta = read_meta(prepared)
    # A kind of task with no trainer of its own (a toy kind registered from a file) trains
    # as classification did before kinds had trainers: one output per class, scored by it.
    trainer = meta.task if meta.task in TRAINERS else DEFAULT_TASK
    trains_for = ARCHITECTURES[model_params.architecture].task
    if trains_for != trainer:
        fitting = sorted(name for name, entry in ARCHITECTURES.items() if entry.task == trainer)
        raise TrainingError(
            f"train: model.architecture {model_params.architecture!r} is a {trains_for} model; "
            f"the data is prepared for {meta.task} (data.task): use {' or '.join(fitting)}")
    return TRAINERS[trainer](model_params, train_params, prepared, meta, out_dir, metrics_dir,
                             decoding)


def train_classifier(model_params: ModelOptions, train_params: TrainParams, prepared: Path,
                     meta: PreparedMeta, out_dir: Path, metrics_dir: Path) -> TrainResult:
    """Train a classifier (the module docstring)."""
    x_train, y_train = load_split(prepared, "train")
    x_val, y_val = load_split(prepared, "val")
    x_test, y_test = load_split(prepared, "test")
    classes = len(meta.classes)

    seed_training(train_params.seed)
    model = build_model(model_params, tuple(meta.input_shape), classes)
    batches = ShuffledBatches(
        x_train, keras.utils.to_categorical(y_train, classes).astype(np.float32),
        class_weights(y_train, classes, train_params.class_weight)[y_train],
        train_params.batch_size, augmenter(train_params.augmentation), train_params.seed)
    learning_rate, schedule_callbacks = LR_SCHEDULES[train_params.lr_schedule](train_params, len(batches))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(
                      from_logits=True, label_smoothing=train_params.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    selector = EpochSelector(x_train, x_val, y_val, train_params.batch_size,
                             train_params.early_stopping_patience)
    # The selector first: it writes the val metrics the schedule and the bar read.
    # shuffle=False: the batches already come in an order seeded by (seed, epoch); Keras'
    # own shuffle of a PyDataset's batches would only add a second, redundant draw.
    history = model.fit(batches, epochs=train_params.epochs, verbose=0, shuffle=False,
                        callbacks=[selector, *schedule_callbacks,
                                   EpochProgress(train_params.epochs,
                                                 train_params.early_stopping_patience)])
    selector.restore()

    train_score, _ = _score(model, x_train, y_train)
    val_score, _ = _score(model, x_val, y_val)
    check_learned(train_score, val_score, y_val)
    test_score, test_outputs = _score(model, x_test, y_test)
    epochs_run = len(history.history["loss"])

    with atomic_output_dir(out_dir) as staging:
        model.save(staging / "model.keras")
        model.export(str(staging / "saved_model"), format="tf_saved_model", verbose=False)
        # Per-image correctness on the test split, in order: a device evaluated on the
        # first N test images is compared with the reference on those same N.
        write_json(staging / "reference.json",
                   {"test_correct": reference_results(meta.task, test_outputs, y_test)})
    metrics_dir.mkdir(parents=True, exist_ok=True)
    write_json(metrics_dir / "train.json", {
        **_split_metrics("train", train_score), **_split_metrics("val", val_score),
        **_split_metrics("test", test_score),
        "val_majority_class_rate": majority_rate(y_val),
        "best_epoch": selector.best_epoch,
        "epochs_run": epochs_run,
        "parameters": int(model.count_params()),
        "architecture": model_params.architecture,
    })
    write_json(metrics_dir / "train_history.json", [
        {"epoch": epoch + 1, **{key: float(values[epoch]) for key, values in history.history.items()}}
        for epoch in range(epochs_run)])
    return TrainResult(out_dir, train_score, val_score, test_score, selector.best_epoch, epochs_run)


def _train_classifier(model_params: ModelOptions, train_params: TrainParams, prepared: Path,
                      meta: PreparedMeta, out_dir: Path, metrics_dir: Path,
                      decoding: DetectionDecoding | None) -> Any:
    # A class is the argmax of the outputs: there is no decoding to apply.
    return train_classifier(model_params, train_params, prepared, meta, out_dir, metrics_dir)


def _train_detector(model_params: ModelOptions, train_params: TrainParams, prepared: Path,
                    meta: PreparedMeta, out_dir: Path, metrics_dir: Path,
                    decoding: DetectionDecoding | None) -> Any:
    # Imported when asked for: a classification run loads no detection code.
    from tasks.train.detection import train_detector
    return train_detector(model_params, train_params, prepared, meta, out_dir, metrics_dir,
                          decoding)


# How each kind of task's data trains an architecture of that kind, by the prepared
# meta's task (another kind's data trains as classification's).
TRAINERS: dict[str, Callable[..., Any]] = {"classification": _train_classifier,
                                           "detection": _train_detector}


def _split_metrics(split: str, score: SplitScore) -> dict[str, float | int]:
    low, high = score.interval
    return {f"{split}_accuracy": score.accuracy, f"{split}_accuracy_low": low,
            f"{split}_accuracy_high": high, f"{split}_samples": score.samples}


# ---------------------------------------------------------------- a model you bring

def _onnx_predictor(path: Path, spec: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """Logits of images in [0, 1] from an ONNX model in ONNX Runtime (CPU, f32, one
    thread, batch 1 as the file is fixed to): the reference every variant is checked
    against (convert runs it through the harness's loader, to the same numbers)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(images: np.ndarray) -> np.ndarray:
        arranged = arrange_batch(images, spec)
        return np.concatenate([session.run(None, {name: arranged[i:i + 1]})[0].reshape(1, -1)
                               for i in range(len(arranged))]) if len(arranged) else \
            np.zeros((0, 0), np.float32)
    return predict


def _keras_predictor(model: Any, spec: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda images: np.asarray(model.predict(arrange_batch(images, spec),
                                                   batch_size=PREDICT_BATCH, verbose=0),
                                     dtype=np.float32)


def _ends_in_softmax(model: Any) -> bool:
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def _with_new_head(model: Any, features_from: Any, classes: int) -> Any:
    """``model`` up to ``features_from``'s output, then a new dense head of ``classes``
    logits (named ``edgeflow_head``); spatial features are pooled first (flattened when
    they are 1x1, as a MobileNetV3's are)."""
    features = features_from.output
    if len(features.shape) > 2:
        spatial = features.shape[1:-1]
        if all(side == 1 for side in spatial) or len(spatial) not in (1, 2):
            features = keras.layers.Flatten(name="edgeflow_flatten")(features)
        else:
            pooling = (keras.layers.GlobalAveragePooling1D if len(spatial) == 1
                       else keras.layers.GlobalAveragePooling2D)
            features = pooling(name="edgeflow_pool")(features)
    return keras.Model(model.inputs, keras.layers.Dense(classes, name="edgeflow_head")(features))


def fine_tune(model: Any, options: FineTuneOptions, train_params: TrainParams,
              splits: dict[str, tuple[np.ndarray, np.ndarray]], spec: dict[str, Any],
              classes: int, source: str) -> tuple[Any, list[dict[str, float]], int]:
    """Train a Keras model further on the data, as :func:`train` trains: a new head on
    its features (:func:`tasks.models.model_file.feature_layer`) when its output is not
    one score per class of the data or ``options.feature_layer`` is named; only the
    layers after the features when ``freeze_base``. Batch-norm statistics are first
    re-estimated on the train images (a model trained elsewhere, or briefly, carries
    moving averages its weights do not match), and again after every epoch when the base
    trains (``options.batch_norm: keep`` keeps the file's); each epoch is judged in
    inference mode on val and the best one is kept (early stopping after
    ``train.early_stopping_patience``). Returns the model, its per-epoch history and the
    epoch kept. Raises ModelFileError for a feature layer the model does not have."""
    seed_training(train_params.seed)
    features = feature_layer(model, options.feature_layer, source)
    if int(model.outputs[0].shape[-1]) != classes or options.feature_layer is not None:
        model = _with_new_head(model, features, classes)
    x_train, y_train = arrange_batch(splits["train"][0], spec), splits["train"][1]
    x_val, y_val = arrange_batch(splits["val"][0], spec), splits["val"][1]
    reestimating = options.batch_norm == "reestimate"
    if reestimating:
        # Before any layer is frozen: every batch norm then normalises by batch statistics
        # in the pass that measures them, as in training. A MobileNetV3 trained briefly
        # elsewhere (moving averages that lag its weights) gave features on which no head
        # learned (the majority rate) without this.
        batch_norm.reestimate(model, x_train, train_params.batch_size)
    if options.freeze_base:
        # What comes after the features (the head) trains; the base, batch norms included,
        # is fixed, so its re-estimated statistics stay right for every epoch.
        names = [layer.name for layer in model.layers]
        head = set(names[names.index(features.name) + 1:])
        for layer in model.layers:
            layer.trainable = layer.name in head
    model.compile(optimizer=keras.optimizers.Adam(options.learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=not _ends_in_softmax(model)),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    patience = train_params.early_stopping_patience
    selector = EpochSelector(x_train, x_val, y_val, train_params.batch_size, patience,
                             reestimate_batch_norm=reestimating and not options.freeze_base)
    history = model.fit(x_train, keras.utils.to_categorical(y_train, classes),
                        batch_size=train_params.batch_size, epochs=options.epochs, verbose=0,
                        callbacks=[selector, EpochProgress(options.epochs, patience)])
    selector.restore()
    epochs = len(history.history["loss"])
    return model, [{"epoch": epoch + 1, **{key: float(values[epoch])
                                           for key, values in history.history.items()}}
                   for epoch in range(epochs)], selector.best_epoch


def _fixed_onnx(source: Path, target: Path, shape: list[int]) -> None:
    """``source`` with its input's open dimensions (batch, and height and width where
    left open) fixed to ``shape``: every runtime then sees batch 1."""
    import onnx

    model = onnx.load(str(source))
    initialisers = {init.name for init in model.graph.initializer}
    graph_input = next(value for value in model.graph.input if value.name not in initialisers)
    for dim, size in zip(graph_input.type.tensor_type.shape.dim, shape):
        dim.Clear()
        dim.dim_value = size
    onnx.save(model, str(target))


def _parameter_count(kind: str, model: Any, path: Path) -> int:
    if kind != "onnx":
        return int(model.count_params())
    import onnx

    return int(sum(np.prod(init.dims) for init in onnx.load(str(path)).graph.initializer))


def _write_model(staging: Path, found: ModelFile, spec: dict[str, Any], classes: int,
                 model: Any, tuned: bool, output: dict[str, Any] | None = None) -> None:
    """The model where convert reads it, with ``source.json`` (its kind, input spec,
    classes and, for a detector, ``output``: the layout of its output)."""
    if found.kind == "onnx":
        _fixed_onnx(found.path, staging / "model.onnx", spec["shape"])
    elif found.kind == "saved_model" and not tuned:
        shutil.copytree(found.path, staging / "saved_model")
    else:
        model.save(staging / "model.keras")
        model.export(str(staging / "saved_model"), format="tf_saved_model", verbose=False)
    write_json(staging / "source.json", {"kind": found.kind, "file": found.path.name,
                                         "sha256": sha256_tree(found.path),
                                         "input": spec, "classes": classes,
                                         **({"output": output} if output else {})})


def _adopt_detector(found: ModelFile, options: ModelFileOptions, spec: dict[str, Any],
                    model: Any, predict: Callable[[np.ndarray], np.ndarray],
                    splits: dict[str, tuple[np.ndarray, np.ndarray]], meta: PreparedMeta,
                    out_dir: Path, metrics_dir: Path,
                    thresholds: DetectionDecoding | None = None) -> Any:
    """:func:`adopt` for a detector you bring (``model.format: yolo``): every split scored
    as the detection kind scores (its output decoded by its layout and ``thresholds``,
    ``data.detection``, as the grid detector's training scores), the model written with its
    output layout, ``reference.json`` with each test image's matches."""
    from tasks.train.detection import DetectorResult, evaluate, post_processing, split_metrics

    output = {"format": options.format}
    # Its layout, and data.detection's thresholds (``thresholds``): the decoding convert
    # writes into every variant's spec, so the reference and the variants score alike.
    decoding = {"input": spec, "task": "detection",
                "detection": {**output, "classes": found.classes,
                              **decoding_spec(thresholds)["detection"]}}
    scores = {split: evaluate(predict(images), labels, spec=decoding)
              for split, (images, labels) in splits.items()}
    with atomic_output_dir(out_dir) as staging:
        _write_model(staging, found, spec, found.classes, model, tuned=False, output=output)
        write_json(staging / "reference.json", {"task": "detection",
                                                "test_correct": scores["test"].records})
    metrics_dir.mkdir(parents=True, exist_ok=True)
    write_json(metrics_dir / "train.json", split_metrics(scores, meta.classes) | {
        "best_epoch": 0, "epochs_run": 0,
        "parameters": _parameter_count(found.kind, model, found.path),
        "architecture": f"file ({found.kind}, {options.format})",
        "post_processing": post_processing(decoding)})
    write_json(metrics_dir / "train_history.json", [])
    return DetectorResult(out_dir, scores["train"], scores["val"], scores["test"], 0, 0)


def adopt(options: ModelFileOptions, train_params: TrainParams, prepared: Path,
          out_dir: Path, metrics_dir: Path, decoding: DetectionDecoding | None = None
          ) -> TrainResult:
    """``train`` for a model you bring: check that it takes the data's images and answers
    its classes, fine-tune it when asked (Keras), evaluate it on every split (the test
    accuracy is the reference every variant is compared with) and write it where convert
    reads a model: ``model.onnx``, or ``model.keras`` and ``saved_model/``, or the
    SavedModel, with ``source.json`` (its kind and input spec)."""
    meta = read_meta(prepared)
    height, width, channels = meta.input_shape
    color, classes = ("grayscale" if channels == 1 else "rgb"), len(meta.classes)
    tuning = train_params.fine_tune
    try:
        check_task(options, meta.task)
        found = inspect_model_file(options.path, options.layout, options.format)
        if tuning is not None and found.kind != "keras":
            raise ModelFileError(f"train.fine_tune needs a .keras model; {found.path.name} is "
                                 f"{'an ONNX' if found.kind == 'onnx' else 'a SavedModel'} model")
        check_fits(found, (height, width), color, classes, new_head=tuning is not None)
    except ModelFileError as error:
        raise TrainingError(f"train: {error}") from None
    spec = input_spec(found, options, (height, width))
    splits = {split: load_split(prepared, split) for split in ("train", "val", "test")}
    history: list[dict[str, float]] = []
    best_epoch = 0
    model = None
    if found.kind == "onnx":
        predict = _onnx_predictor(found.path, spec)
    else:
        # Seeded before loading: Keras draws the seed of each loaded layer's generator
        # (Dropout's masks) as it builds the layer.
        seed_training(train_params.seed)
        model = load_keras(found.path)
        if tuning is not None:
            try:
                model, history, best_epoch = fine_tune(model, tuning, train_params, splits,
                                                       spec, classes, found.path.name)
            except ModelFileError as error:
                raise TrainingError(f"train: {error}") from None
        predict = _keras_predictor(model, spec)
    if meta.task == "detection":
        return _adopt_detector(found, options, spec, model, predict, splits, meta, out_dir,
                               metrics_dir, decoding)
    scores = {}
    for split, (images, labels) in splits.items():
        outputs = predict(images)
        correct = np.argmax(outputs, axis=1) == labels
        scores[split] = (SplitScore(float(np.mean(correct)) if len(correct) else 0.0,
                                    len(correct)), outputs)
    if tuning is not None:
        # A fine-tune that did not learn is refused as a training is; nothing written.
        check_learned(scores["train"][0], scores["val"][0], splits["val"][1])
    with atomic_output_dir(out_dir) as staging:
        _write_model(staging, found, spec, classes, model, tuned=tuning is not None)
        write_json(staging / "reference.json",
                   {"test_correct": reference_results(meta.task, scores["test"][1],
                                                      splits["test"][1])})
    (train_score, _), (val_score, _), (test_score, _) = (scores[s] for s in ("train", "val", "test"))
    metrics_dir.mkdir(parents=True, exist_ok=True)
    write_json(metrics_dir / "train.json", {
        **_split_metrics("train", train_score), **_split_metrics("val", val_score),
        **_split_metrics("test", test_score),
        "val_majority_class_rate": majority_rate(splits["val"][1]),
        "best_epoch": best_epoch, "epochs_run": len(history),
        "parameters": _parameter_count(found.kind, model, found.path),
        "architecture": f"file ({found.kind})"})
    write_json(metrics_dir / "train_history.json", history)
    return TrainResult(out_dir, train_score, val_score, test_score, best_epoch, len(history))
