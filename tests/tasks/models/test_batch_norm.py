"""Batch-norm statistics re-estimated from the training images ("precise BN")."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.models import batch_norm


def _model(seed: int = 0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(6, 6, 2))
    x = layers.BatchNormalization(momentum=0.99, name="bn_in")(inputs)
    x = layers.Conv2D(3, 3, padding="same", use_bias=False, name="conv")(x)
    x = layers.BatchNormalization(momentum=0.99, name="bn_mid")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(4)(x))


def _images(count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Channels far from the layers' initial statistics (mean 0, variance 1).
    return (rng.normal(size=(count, 6, 6, 2)) * [3.0, 0.5] + [5.0, -2.0]).astype(np.float32)


def test_statistics_are_the_mean_of_the_batch_statistics() -> None:
    model, images = _model(), _images(70)
    assert batch_norm.reestimate(model, images, batch_size=32) == 2
    first = model.get_layer("bn_in")
    # 70 images in batches of 32: two full batches; the last 6 images are left out.
    batches = [images[:32], images[32:64]]
    np.testing.assert_allclose(first.moving_mean.numpy(),
                               np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0), rtol=1e-5)
    np.testing.assert_allclose(first.moving_variance.numpy(),
                               np.mean([b.var(axis=(0, 1, 2)) for b in batches], axis=0), rtol=1e-4)


def test_a_later_layer_sees_its_input_as_in_training() -> None:
    model, images = _model(), _images(40)
    batch_norm.reestimate(model, images, batch_size=40)
    conv, second = model.get_layer("conv"), model.get_layer("bn_mid")
    first = model.get_layer("bn_in")
    # In training mode the first layer normalises by the batch's own statistics.
    normalised = (images - images.mean(axis=(0, 1, 2))) / np.sqrt(images.var(axis=(0, 1, 2)) + first.epsilon)
    features = np.asarray(conv(normalised * first.gamma.numpy() + first.beta.numpy()))
    np.testing.assert_allclose(second.moving_mean.numpy(), features.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(second.moving_variance.numpy(), features.var(axis=(0, 1, 2)),
                               rtol=1e-3)


def test_inference_then_matches_training_mode_on_one_batch() -> None:
    """The property that matters: with statistics from the same images, the model used
    in inference mode gives what training mode gives. Before, 0.99 momentum after a few
    steps left them far apart."""
    model, images = _model(), _images(32)
    before = np.abs(np.asarray(model(images, training=False)) - np.asarray(model(images, training=True))).max()
    batch_norm.reestimate(model, images, batch_size=32)
    after = np.abs(np.asarray(model(images, training=False)) - np.asarray(model(images, training=True))).max()
    assert before > 0.5 and after < 1e-3, (before, after)


def test_fewer_images_than_a_batch_are_one_batch_and_weights_are_kept() -> None:
    model, images = _model(), _images(5)
    kernel = model.get_layer("conv").kernel.numpy().copy()
    batch_norm.reestimate(model, images, batch_size=32)
    np.testing.assert_allclose(model.get_layer("bn_in").moving_mean.numpy(),
                               images.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_array_equal(model.get_layer("conv").kernel.numpy(), kernel)


def test_at_most_max_images_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_norm, "MAX_IMAGES", 8)
    model, images = _model(), _images(64)
    images[8:] += 100.0  # would move the mean far if it were read
    batch_norm.reestimate(model, images, batch_size=4)
    np.testing.assert_allclose(model.get_layer("bn_in").moving_mean.numpy(),
                               images[:8].mean(axis=(0, 1, 2)), rtol=1e-5)


def test_a_model_without_batch_norm_or_images_is_left_alone() -> None:
    import keras

    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert batch_norm.reestimate(plain, np.ones((8, 4), np.float32), 4) == 0
    assert batch_norm.reestimate(_model(), np.zeros((0, 6, 6, 2), np.float32), 4) == 0
