"""Registry of Keras architectures, by name.

Each entry is an options model (pydantic, validated in ``params.yaml`` under ``model``)
and a builder ``(options, input_shape, num_classes) -> keras.Model``. Every model
outputs raw logits (no softmax), so exported artifacts can be compared logit by logit.
Keras is imported inside the builders: validating a params file must stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal

from pydantic import Field

from tasks.core.strict import StrictModel, count

if TYPE_CHECKING:  # pragma: no cover
    import keras


class SmallCNNOptions(StrictModel):
    """A plain conv/batch-norm/ReLU stack: fast to train, friendly to every converter."""

    architecture: Literal["small_cnn"] = "small_cnn"
    filters: list[Annotated[int, count(1, 1024)]] = Field(default=[32, 64, 128], min_length=1,
                                                         max_length=6)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)


class MobileNetV2Options(StrictModel):
    """MobileNetV2-style inverted residuals with depthwise-separable convolutions."""

    architecture: Literal["mobilenet_v2"] = "mobilenet_v2"
    width_multiplier: float = Field(default=0.5, gt=0.0, le=2.0)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)


# Small edge datasets give few optimiser steps per run: Keras' default momentum (0.99)
# leaves the moving statistics far behind the weights (inference accuracy collapses while
# training accuracy looks perfect), so statistics follow the weights faster here.
BN_MOMENTUM = 0.9


def _make_divisible(value: float, divisor: int = 8) -> int:
    # Channel counts are kept multiples of 8, as in the MobileNet papers: SIMD kernels
    # on edge CPUs and NPUs are fastest on such widths.
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def build_small_cnn(options: SmallCNNOptions, input_shape: tuple[int, int, int],
                    num_classes: int) -> "keras.Model":
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for index, filters in enumerate(options.filters):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{index}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{index}")(x)
        x = layers.ReLU(name=f"relu{index}")(x)
        if index < len(options.filters) - 1:
            x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(options.dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


# (expansion, output channels at width 1.0, repeats, first stride): a shortened
# MobileNetV2 schedule sized for small inputs (32x32 and up).
_MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2))


def build_mobilenet_v2(options: MobileNetV2Options, input_shape: tuple[int, int, int],
                       num_classes: int) -> "keras.Model":
    import keras
    from keras import layers

    alpha = options.width_multiplier
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(_make_divisible(32 * alpha), 3, strides=1, padding="same",
                      use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    block = 0
    for expansion, channels, repeats, first_stride in _MOBILENET_V2_BLOCKS:
        out_channels = _make_divisible(channels * alpha)
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            x = _inverted_residual(x, expansion, out_channels, stride, f"block{block}")
            block += 1
    x = layers.Conv2D(_make_divisible(128 * alpha), 1, use_bias=False, name="head_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(options.dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


def _inverted_residual(x: Any, expansion: int, out_channels: int, stride: int,
                       name: str) -> Any:
    from keras import layers

    in_channels = x.shape[-1]
    shortcut = x
    if expansion != 1:
        x = layers.Conv2D(in_channels * expansion, 1, use_bias=False, name=f"{name}_expand")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_expand_relu")(x)
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                               name=f"{name}_dw")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(out_channels, 1, use_bias=False, name=f"{name}_project")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_project_bn")(x)
    if stride == 1 and in_channels == out_channels:
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return x


@dataclass(frozen=True)
class Architecture:
    name: str
    options: type[StrictModel]
    build: Callable[[Any, tuple[int, int, int], int], "keras.Model"]


ARCHITECTURES: dict[str, Architecture] = {
    "small_cnn": Architecture("small_cnn", SmallCNNOptions, build_small_cnn),
    "mobilenet_v2": Architecture("mobilenet_v2", MobileNetV2Options, build_mobilenet_v2),
}

ModelOptions = SmallCNNOptions | MobileNetV2Options


def build_model(options: ModelOptions, input_shape: tuple[int, int, int],
                num_classes: int) -> "keras.Model":
    """Build the registered architecture named by ``options.architecture``."""
    return ARCHITECTURES[options.architecture].build(options, input_shape, num_classes)
