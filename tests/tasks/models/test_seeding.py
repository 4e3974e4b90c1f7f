"""Seeded training in one process: what Keras draws does not depend on what else draws
from Python's global random generator (tests/tasks/test_train.py trains twice in two
processes)."""

from __future__ import annotations

import random

import numpy as np

from tasks.models.seeding import seed_training


def _new_model_weights(seed: int, draws_between: int) -> list[np.ndarray]:
    """The initial weights of a small unseeded model (a Dropout among its layers) made
    after ``seed_training(seed)``, another user of Python's generator drawing
    ``draws_between`` numbers in between."""
    import keras

    seed_training(seed)
    for _ in range(draws_between):
        random.random()
    inputs = keras.Input((4,))
    hidden = keras.layers.Dropout(0.5)(keras.layers.Dense(8)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    return [*model.get_weights(), np.asarray(model.layers[2].seed_generator.state.numpy())]


def test_unseeded_layers_get_the_same_seeds_whatever_else_draws() -> None:
    quiet, busy = _new_model_weights(11, 0), _new_model_weights(11, 1000)
    same = [ours.tobytes() == theirs.tobytes() for ours, theirs in zip(quiet, busy)]
    assert len(same) == 5 and all(same), same
    other = _new_model_weights(12, 0)
    assert quiet[0].tobytes() != other[0].tobytes()  # the seed still matters


def test_a_py_datasets_batch_order_is_seeded_whatever_else_draws() -> None:
    """Keras shuffles the batches of a PyDataset (fit's shuffle=True) from a generator
    seeded with the training's seed."""
    import keras

    class Recorded(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.asked: list[int] = []

        def __len__(self) -> int:
            return 8

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            self.asked.append(index)
            return np.full((2, 1), index, np.float32), np.zeros((2, 1), np.float32)

    orders = []
    for draws_between in (0, 1000):
        seed_training(5)
        for _ in range(draws_between):
            random.random()
        data = Recorded()
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        model.fit(data, epochs=2, shuffle=True, verbose=0)
        orders.append(data.asked)
    assert sorted(orders[0]) != orders[0] and orders[0] == orders[1]
