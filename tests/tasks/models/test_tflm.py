"""The TensorFlow Lite Micro format (tasks/models/formats/tflm.py): the tensor arena it
records is one the real TFLM interpreter allocates the model in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.models.formats.tflm import (ALIGNMENT, allocates, measure_arena_bytes,
                                       recorded_arena_bytes)
from tests.model_files import mobilenet_v3


def _int8_tflite(keras_file: Path) -> bytes:
    import keras
    import tensorflow as tf

    model = keras.models.load_model(keras_file, compile=False)
    images = np.random.default_rng(0).random((8, 32, 32, 3), np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.fixture(scope="module")
def mobilenet_int8(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _int8_tflite(mobilenet_v3(tmp_path_factory.mktemp("mnv3") / "model.keras"))


def test_the_arena_recorded_is_the_smallest_the_interpreter_allocates_in(
        mobilenet_int8: bytes) -> None:
    """A MobileNetV3Small's kernels take temporary memory while they are prepared, which
    the recording allocator's total leaves out: the interpreter given that total fails to
    allocate. The recorded size is verified by creating the interpreter with exactly it."""
    from tflite_micro.python.tflite_micro import runtime as tflm

    recorded = recorded_arena_bytes(mobilenet_int8)
    arena = measure_arena_bytes(mobilenet_int8)
    assert not allocates(mobilenet_int8, recorded)  # what was written before
    assert arena > recorded and arena % ALIGNMENT == 0
    interpreter = tflm.Interpreter.from_bytes(mobilenet_int8, arena_size=arena)
    interpreter.set_input(np.zeros((1, 32, 32, 3), np.int8), 0)
    interpreter.invoke()
    assert interpreter.get_output(0).shape == (1, 10)
    # The smallest such size, to the alignment: a little less does not allocate.
    assert not allocates(mobilenet_int8, arena - ALIGNMENT)


def test_a_recorded_arena_that_allocates_is_kept_as_it_is(tmp_path: Path) -> None:
    """A small conv net's kernels take no temporary memory: the recorded total (to the
    alignment) allocates, and it is the smallest multiple of the alignment that does."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    keras.Model(inputs, keras.layers.Dense(3)(features)).save(tmp_path / "tiny.keras")
    model = _int8_tflite(tmp_path / "tiny.keras")
    arena = measure_arena_bytes(model)
    assert arena == -(-recorded_arena_bytes(model) // ALIGNMENT) * ALIGNMENT
    assert arena % ALIGNMENT == 0 and allocates(model, arena)
    assert not allocates(model, arena - ALIGNMENT)
