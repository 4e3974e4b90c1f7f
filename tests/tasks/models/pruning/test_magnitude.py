"""tasks/models/pruning/magnitude.py without training: the schedule's values, the masks'
exact counts and choice, which layers are pruned, and when the callback updates its
masks (driven batch by batch by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.models.pruning.magnitude import magnitude_mask, polynomial_sparsity


@pytest.mark.parametrize(("step", "final", "end", "power", "expected"), [
    (0, 0.8, 8, 3, 0.0),
    (2, 0.8, 8, 3, 0.8 * (1 - 0.75 ** 3)),
    (4, 0.6, 8, 3, 0.6 * (1 - 0.5 ** 3)),
    (4, 0.6, 8, 2, 0.6 * (1 - 0.5 ** 2)),   # the power is the argument's, not always 3
    (7, 0.6, 8, 3, 0.6 * (1 - 0.125 ** 3)),
    (8, 0.6, 8, 3, 0.6), (9, 0.6, 8, 3, 0.6),
    (-3, 0.6, 8, 3, 0.0),                   # before the start: nothing pruned
    (0, 0.6, 0, 3, 0.6), (5, 0.6, -1, 3, 0.6),  # no ramp: the target at once
])
def test_polynomial_sparsity_values(step: int, final: float, end: int, power: int,
                                    expected: float) -> None:
    assert polynomial_sparsity(step, final, end, power) == pytest.approx(expected, abs=1e-12)
    if power == 3:
        assert polynomial_sparsity(step, final, end) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("size", [1, 5, 7, 10, 13])
def test_masks_zero_exactly_round_of_sparsity_times_size_the_smallest_magnitudes(size: int) -> None:
    """Every sparsity on a grid whose products with ``size`` are not whole numbers (so
    int() and round(), floor and ceil differ), weights of mixed sign and distinct
    magnitudes: the zeros are exactly the ``round(s * size)`` smallest |w|."""
    rng = np.random.default_rng(size)
    magnitudes = rng.permutation(np.arange(1, size + 1)) * 0.5
    weights = (magnitudes * rng.choice([-1.0, 1.0], size)).astype(np.float32).reshape(1, size)
    for sparsity in np.linspace(0.03, 0.97, 33):
        mask = magnitude_mask(weights, float(sparsity))
        assert mask.shape == weights.shape and mask.dtype == np.float32
        zeros = int(round(sparsity * size))
        expected = (magnitudes > np.sort(magnitudes)[zeros - 1]) if zeros else np.ones(size, bool)
        assert mask.reshape(-1).tolist() == expected.astype(np.float32).tolist(), sparsity


def test_sparsity_zero_keeps_every_weight() -> None:
    assert magnitude_mask(np.array([0.0, -1.0, 2.0]), 0.0).tolist() == [1.0, 1.0, 1.0]


def _tiny_model():
    import keras

    inner = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 1, name="inner_conv")],
                             name="inner")
    inputs = keras.Input((4, 4, 2))
    x = inner(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(4, 1, name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))


def test_prunable_layers_are_conv_and_dense_inside_nested_models_but_not_depthwise() -> None:
    from tasks.models.pruning.magnitude import prunable_layers

    assert [layer.name for layer in prunable_layers(_tiny_model())] == [
        "inner_conv", "pw", "logits"]


def test_the_callback_updates_masks_every_update_every_steps_and_at_the_end_of_the_ramp() -> None:
    """end_step 7, update_every 3: masks at steps 0, 3, 6 and 7 (the end of the ramp,
    not a multiple of 3), none after; the pruned weights stay zero after every batch."""
    from tasks.models.pruning.magnitude import MagnitudePruning

    model = _tiny_model()
    layer = model.get_layer("logits")
    layer.kernel.assign(np.arange(1, 9, dtype=np.float32).reshape(4, 2))
    callback = MagnitudePruning([layer], 0.5, end_step=7, update_every=3)
    for step in range(10):
        callback.on_train_batch_begin(step)
        layer.kernel.assign(layer.kernel.numpy() + 0.5)  # the optimiser moves every weight
        callback.on_train_batch_end(step)
        assert int(np.count_nonzero(layer.kernel.numpy() == 0)) == round(
            callback.current_sparsity * 8), step
    assert [update["step"] for update in callback.updates] == [0, 3, 6, 7]
    assert [update["sparsity"] for update in callback.updates] == [
        round(polynomial_sparsity(step, 0.5, 7), 6) for step in (0, 3, 6, 7)]
    assert callback.current_sparsity == 0.5 and callback.step == 10
    assert callback.measured_sparsity() == 0.5
    callback.on_train_end()
    assert callback.sparsity_at_train_end == 0.5
    # The four smallest weights (1..4, each moved by the same amount) are the zeros.
    assert (layer.kernel.numpy().reshape(-1)[:4] == 0).all()
    assert (layer.kernel.numpy().reshape(-1)[4:] > 0).all()


def test_before_its_first_batch_the_callback_masks_nothing_and_has_no_end_figure() -> None:
    """A callback not yet run (fit interrupted before its first batch, say): applying its
    masks leaves every weight as it was, and it has no sparsity at the end of training
    (None, which the details record as null) until on_train_end."""
    from tasks.models.pruning.magnitude import MagnitudePruning

    layer = _tiny_model().get_layer("logits")
    weights = np.arange(1, 9, dtype=np.float32).reshape(4, 2)
    layer.kernel.assign(weights)
    callback = MagnitudePruning([layer], 0.5, end_step=7, update_every=3)
    callback.apply_masks()
    callback.on_train_batch_end(0)  # the end of a batch whose beginning it never saw
    assert np.array_equal(layer.kernel.numpy(), weights)
    assert (callback.step, callback.current_sparsity, callback.updates) == (1, 0.0, [])
    assert callback.sparsity_at_train_end is None
    callback.on_train_end()
    assert callback.sparsity_at_train_end == 0.0
