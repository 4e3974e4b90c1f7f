"""Step ``train``: prepared data -> a trained Keras model and its fp32 reference accuracy.

Reads params ``model`` and ``train`` and ``data/prepared/``. Writes
``models/base/model.keras``, ``models/base/saved_model/`` (what the converters read),
``models/base/reference.json`` (which test images the model gets right, in order),
``metrics/train.json`` (test accuracy: the fp32 reference every variant is compared
with) and ``metrics/train_history.json`` (per-epoch curves for ``dvc plots``).
Training is seeded, shows a progress bar and stops early on validation accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.architectures import ModelOptions, build_model
from tasks.config import TrainParams
from tasks.errors import StepError
from tasks.files import atomic_output_dir, read_json, write_json
from tasks.prepare import load_split


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    test_accuracy: float
    val_accuracy: float
    epochs_run: int


def _progress_callback(total_epochs: int) -> Any:
    import keras
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class RichEpochProgress(keras.callbacks.Callback):
        """One bar over epochs with the latest accuracy; quiet enough for CI logs."""

        def on_train_begin(self, logs: Any = None) -> None:
            self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.description}"), TimeElapsedColumn(),
                                     transient=False)
            self.progress.start()
            self.task = self.progress.add_task("", total=total_epochs)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            self.progress.update(self.task, advance=1, description=(
                f"loss {logs.get('loss', 0):.3f} acc {logs.get('accuracy', 0):.3f} "
                f"val_acc {logs.get('val_accuracy', 0):.3f}"))

        def on_train_end(self, logs: Any = None) -> None:
            self.progress.stop()

    return RichEpochProgress()


def train(model_params: ModelOptions, train_params: TrainParams, prepared: Path,
          out_dir: Path, metrics_dir: Path) -> TrainResult:
    """Train, evaluate on the test split, and write the model and its metrics."""
    import keras

    meta_path = prepared / "meta.json"
    if not meta_path.is_file():
        raise StepError(f"{meta_path} is missing: run the prepare step first")
    meta = read_json(meta_path, keys=("input_shape", "classes"))
    x_train, y_train = load_split(prepared, "train")
    x_val, y_val = load_split(prepared, "val")
    x_test, y_test = load_split(prepared, "test")

    keras.utils.set_random_seed(train_params.seed)
    model = build_model(model_params, tuple(meta["input_shape"]), len(meta["classes"]))
    model.compile(optimizer=keras.optimizers.Adam(train_params.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=train_params.early_stopping_patience,
        restore_best_weights=True)
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val),
                        epochs=train_params.epochs, batch_size=train_params.batch_size,
                        shuffle=True, verbose=0,
                        callbacks=[early_stopping, _progress_callback(train_params.epochs)])

    test_correct = np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test
    test_accuracy = float(np.mean(test_correct))
    val_accuracy = float(max(history.history["val_accuracy"]))
    epochs_run = len(history.history["loss"])

    with atomic_output_dir(out_dir) as staging:
        model.save(staging / "model.keras")
        model.export(str(staging / "saved_model"), format="tf_saved_model", verbose=False)
        # Per-image correctness on the test split, in order: a device evaluated on the
        # first N test images is compared with the reference on those same N.
        write_json(staging / "reference.json", {"test_correct": test_correct.astype(int).tolist()})
    metrics_dir.mkdir(parents=True, exist_ok=True)
    write_json(metrics_dir / "train.json", {
        "test_accuracy": test_accuracy,
        "val_accuracy": val_accuracy,
        "epochs_run": epochs_run,
        "parameters": int(model.count_params()),
        "architecture": model_params.architecture,
    })
    write_json(metrics_dir / "train_history.json", [
        {"epoch": epoch + 1, **{key: float(values[epoch]) for key, values in history.history.items()}}
        for epoch in range(epochs_run)])
    return TrainResult(out_dir, test_accuracy, val_accuracy, epochs_run)
