"""Registry of Keras architectures, by name.

Each entry is an options model (pydantic, validated in ``params.yaml`` under ``model``)
and a builder ``(options, input_shape, num_classes) -> keras.Model``. Every model
outputs raw logits (no softmax), so exported artifacts can be compared logit by logit:
a classifier one per class, the detector (``tiny_detector``) a grid of raw box fields
(the detection kind's "grid" layout, ``tasks/device/kinds/detection.py``).
Keras is imported inside the builders: validating a params file must stay cheap.
"""

from __future__ import annotations

import math
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


class TinyDetectorOptions(StrictModel):
    """A single-stage, anchor-free grid detector on a MobileNetV2-style backbone: one
    output ``(S, S, 5 + C)`` per image (the detection kind's "grid" layout), S the input
    side over ``stride``."""

    architecture: Literal["tiny_detector"] = "tiny_detector"
    width_multiplier: float = Field(default=0.5, gt=0.0, le=2.0)
    stride: Literal[8, 16] = Field(default=8, description="input pixels per grid cell: "
                                   "96x96 images give a 12x12 grid at 8, 6x6 at 16")


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


def _stem(inputs: Any, alpha: float, strides: int) -> Any:
    """MobileNetV2's stem: a 3x3 convolution of 32 x ``alpha`` filters, batch norm, ReLU6."""
    from keras import layers

    x = layers.Conv2D(_make_divisible(32 * alpha), 3, strides=strides, padding="same",
                      use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    return layers.ReLU(6.0, name="stem_relu")(x)


def build_mobilenet_v2(options: MobileNetV2Options, input_shape: tuple[int, int, int],
                       num_classes: int) -> "keras.Model":
    import keras
    from keras import layers

    alpha = options.width_multiplier
    inputs = keras.Input(shape=input_shape, name="image")
    x = _stem(inputs, alpha, strides=1)
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


# The detector's backbone: (expansion, output channels at width 1.0, repeats, first
# stride) after a stride-2 stem; the blocks up to the asked stride are built (the third
# brings the grid to 8 pixels a cell, the fourth to 16).
_TINY_DETECTOR_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2))
_TINY_DETECTOR_BLOCKS_AT = {8: 3, 16: 4}
# The objectness bias starts at the logit of 1%: most cells hold no object, and a head
# that starts at 50% spends its first epochs learning only that (RetinaNet's prior).
OBJECTNESS_PRIOR = 0.01
DETECTION_FIELDS = 5  # objectness, cx, cy, w, h before the class logits


def build_tiny_detector(options: TinyDetectorOptions, input_shape: tuple[int, int, int],
                        num_classes: int) -> "keras.Model":
    """The grid detector: stem, inverted residuals to ``options.stride``, a 1x1 neck and a
    1x1 head of ``5 + num_classes`` raw outputs per cell (no activation: the decoder
    applies its sigmoids and softmax, so an int8 model quantises plain numbers). Only
    conv, depthwise conv, batch norm (folded on export), ReLU6 and add: every converter
    and TFLite Micro run it. ValueError for an input that is not square or whose side
    is not a multiple of the stride (the grid would not be S x S)."""
    import keras
    from keras import layers

    height, width = input_shape[:2]
    if height != width or height % options.stride:
        raise ValueError(f"tiny_detector needs a square input whose side is a multiple of "
                         f"its stride {options.stride}, not {height}x{width}")
    alpha = options.width_multiplier
    inputs = keras.Input(shape=input_shape, name="image")
    x = _stem(inputs, alpha, strides=2)
    block = 0
    for expansion, channels, repeats, first_stride in \
            _TINY_DETECTOR_BLOCKS[:_TINY_DETECTOR_BLOCKS_AT[options.stride]]:
        out_channels = _make_divisible(channels * alpha)
        for repeat in range(repeats):
            x = _inverted_residual(x, expansion, out_channels,
                                   first_stride if repeat == 0 else 1, f"block{block}")
            block += 1
    x = layers.Conv2D(_make_divisible(96 * alpha), 1, use_bias=False, name="neck_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="neck_bn")(x)
    x = layers.ReLU(6.0, name="neck_relu")(x)
    head = layers.Conv2D(DETECTION_FIELDS + num_classes, 1, name="detections")
    outputs = head(x)
    bias = keras.ops.convert_to_numpy(head.bias).copy()
    bias[0] = math.log(OBJECTNESS_PRIOR / (1 - OBJECTNESS_PRIOR))
    head.bias.assign(bias)
    return keras.Model(inputs, outputs, name="tiny_detector")


@dataclass(frozen=True)
class Architecture:
    name: str
    options: type[StrictModel]
    build: Callable[[Any, tuple[int, int, int], int], "keras.Model"]
    # The kind of task its outputs answer (tasks/device/kinds/): what data it trains on.
    task: str = "classification"


ARCHITECTURES: dict[str, Architecture] = {
    "small_cnn": Architecture("small_cnn", SmallCNNOptions, build_small_cnn),
    "mobilenet_v2": Architecture("mobilenet_v2", MobileNetV2Options, build_mobilenet_v2),
    "tiny_detector": Architecture("tiny_detector", TinyDetectorOptions, build_tiny_detector,
                                  task="detection"),
}

ModelOptions = SmallCNNOptions | MobileNetV2Options | TinyDetectorOptions


def build_model(options: ModelOptions, input_shape: tuple[int, int, int],
                num_classes: int) -> "keras.Model":
    """Build the registered architecture named by ``options.architecture``."""
    return ARCHITECTURES[options.architecture].build(options, input_shape, num_classes)
