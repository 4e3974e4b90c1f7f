"""A recipe's fine-tuning options arrive at Keras: the epochs trained, the learning rate
the optimiser holds and the batch size each epoch is cut into (and the batch-norm
re-estimation is given), all off their defaults (6 epochs, 5e-4, 32) so that an option
dropped on its way reads as its default and fails."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tasks.models import batch_norm
from tasks.models.pruning.base import PruningOptions, TrainingData, fine_tune

OPTIONS = PruningOptions(name="pruned", epochs=3, learning_rate=0.0123, batch_size=7)


def test_the_options_differ_from_their_defaults() -> None:
    defaults = PruningOptions(name="pruned")
    for field in ("epochs", "learning_rate", "batch_size"):
        assert getattr(OPTIONS, field) != getattr(defaults, field), field


def test_fine_tuning_runs_the_epochs_at_the_learning_rate_in_batches_of_the_size(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    rng = np.random.default_rng(0)
    data = TrainingData(rng.random((20, 4, 4, 1), np.float32), rng.integers(0, 10, 20),
                        rng.random((5, 4, 4, 1), np.float32), rng.integers(0, 10, 5))
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    reestimated: list[int] = []
    monkeypatch.setattr(batch_norm, "reestimate",
                        lambda model, images, batch_size: reestimated.append(batch_size))

    class Batches(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.per_epoch: list[int] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.per_epoch.append(0)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.per_epoch[-1] += 1

    batches = Batches()
    history = fine_tune(model, OPTIONS, data, [batches])
    assert len(history["loss"]) == len(history["val_loss"]) == 3
    assert batches.per_epoch == [3, 3, 3], "20 images in batches of 7"
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(
        0.0123)
    assert reestimated == [7]


def test_magnitude_pruning_updates_masks_every_update_every_steps_up_to_the_target(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """update_every 4 (not the default 10) and sparsity 0.6 reach the schedule: 20 images in
    batches of 7 for 3 epochs are 9 steps, the ramp ends at step round(0.75 * 9) = 7, so
    the masks are recomputed at steps 0, 4 and 7 (at 0 and 7 only every 10 steps), and
    the kernel ends with exactly 60% zeros."""
    import keras

    from tasks.models.pruning.base import MagnitudePruningOptions
    from tasks.models.pruning.magnitude import prune_magnitude

    monkeypatch.setattr(batch_norm, "reestimate", lambda model, images, batch_size: 0)
    rng = np.random.default_rng(1)
    data = TrainingData(rng.random((20, 4, 4, 1), np.float32), rng.integers(0, 10, 20),
                        rng.random((5, 4, 4, 1), np.float32), rng.integers(0, 10, 5))
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    options = MagnitudePruningOptions(name="sparse", sparsity=0.6, update_every=4, epochs=3,
                                      learning_rate=0.0123, batch_size=7)
    details = prune_magnitude(options, model, data).details
    assert details["schedule"] == {"kind": "polynomial", "power": 3, "total_steps": 9,
                                   "end_step": 7, "update_every": 4, "mask_updates": 3}
    assert details["pruned_sparsity"] == 0.6, "96 of the kernel's 160 weights"
