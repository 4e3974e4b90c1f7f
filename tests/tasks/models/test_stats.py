"""tasks/models/stats.py on a model whose every counted layer gives a different number:
a strided Conv2D, a DepthwiseConv2D with a depth multiplier, a Dense applied at every
position, and a channels-first Conv2D of a non-square map inside a nested model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.models import stats


def _model():
    import keras
    from keras import layers

    inner_input = keras.Input((2, 4, 6))  # channels first: 2 channels of 4x6
    inner = keras.Model(inner_input, layers.Conv2D(3, 1, data_format="channels_first",
                                                   name="nchw")(inner_input), name="inner")
    image = keras.Input((6, 6, 2))
    x = layers.Conv2D(3, 3, strides=2, padding="same", name="conv")(image)       # (3, 3, 3)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.DepthwiseConv2D(2, depth_multiplier=2, padding="same", name="dw")(x)  # (3, 3, 6)
    x = layers.Dense(5, name="dense")(x)                                          # (3, 3, 5)
    return keras.Model(image, x), inner


def test_macs_count_each_kernel_at_each_output_position() -> None:
    model, inner = _model()
    conv = 3 * 3 * (3 * 3 * 2 * 3)      # 9 positions (stride 2), 3x3x2 kernel, 3 filters
    depthwise = 3 * 3 * (2 * 2 * 3 * 2)  # 9 positions, 2x2 taps, 3 channels, multiplier 2
    dense = 3 * 3 * (3 * 2 * 5)          # applied at each of the 9 positions
    assert stats.count_macs(model) == conv + depthwise + dense == 972
    assert stats.count_macs(inner) == 4 * 6 * (1 * 1 * 2 * 3) == 144  # H x W, not C x H


def test_macs_look_inside_nested_models() -> None:
    import keras

    model, inner = _model()
    outer_input = keras.Input((2, 4, 6))
    wrapper = keras.Model(outer_input, inner(outer_input))
    assert stats.count_macs(wrapper) == 144
    assert [name for name, _ in stats.kernels(wrapper)] == ["nchw"]


def test_kernel_sparsity_counts_zeros_of_every_kernel_kind_and_no_bias() -> None:
    model, _ = _model()
    sizes = {"conv": 54, "dw": 24, "dense": 30}
    assert [(name, kernel.size) for name, kernel in stats.kernels(model)] == list(sizes.items())
    for name, zeros in (("conv", 5), ("dw", 3), ("dense", 4)):
        layer = model.get_layer(name)
        kernel = np.where(np.arange(sizes[name]) % 2, 1.0, -1.0).astype(np.float32)  # signs mixed
        kernel[:zeros] = 0.0
        layer.kernel.assign(kernel.reshape(layer.kernel.shape))
        layer.bias.assign(np.zeros(layer.bias.shape, np.float32))  # biases never count
    assert stats.kernel_sparsity(model) == 12 / 108
    assert stats.count_params(model) == model.count_params()


def test_gzip_size_reads_files_longer_than_a_block(tmp_path: Path) -> None:
    import gzip

    data = np.random.default_rng(0).bytes(1_500_000)[:1_200_000] + bytes(900_000)
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    assert stats.gzip_size(path) == len(gzip.compress(data, compresslevel=9, mtime=0))
