"""Size and cost figures of a Keras model, for comparing a pruned model with its base.

- :func:`count_params`: every weight the model stores (trainable or not, e.g. the
  BatchNormalization moving statistics), i.e. ``model.count_params()``.
- :func:`count_macs`: multiply-accumulates for one image. Conv2D counts
  ``H_out*W_out*K_h*K_w*C_in*C_out/groups``, DepthwiseConv2D
  ``H_out*W_out*K_h*K_w*C*depth_multiplier``, Dense ``in*out`` (times the positions it
  is applied to when its input has more than one axis); every other layer counts 0
  (bias adds, batch norm, activations and pooling are cheap next to these, and edge
  runtimes fold batch norm into the convolution anyway).
- :func:`kernel_sparsity`: fraction of exact zeros over all Conv2D, DepthwiseConv2D and
  Dense kernels (biases and batch norm excluded).
- :func:`gzip_size`: the bytes of a file gzipped at level 9. Zeroed weights do not make
  a ``.keras`` file (an uncompressed zip) or a dense array any smaller; they only shrink
  once the file is compressed, which is what this measures.

Keras is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import keras


def _leaf_layers(model: "keras.Model") -> Iterator[Any]:
    """Every layer that is not itself a model, looking inside nested models."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def count_params(model: "keras.Model") -> int:
    """Number of stored weights (trainable and non-trainable)."""
    return int(model.count_params())


def _kernel_layer_types() -> tuple[type, ...]:
    from keras import layers

    return (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)


def count_macs(model: "keras.Model") -> int:
    """Multiply-accumulates of one forward pass on one image (batch size 1).

    Output sizes are read from each layer's symbolic output, so the model must be a
    built functional/sequential model whose layers are each called once (true of every
    architecture in :mod:`tasks.models.architectures`).
    """
    from keras import layers

    total = 0
    for layer in _leaf_layers(model):
        if not isinstance(layer, _kernel_layer_types()):
            continue
        output_shape = tuple(layer.output.shape)
        # The kernel shape already holds K_h*K_w*(C_in/groups)*C_out for Conv2D and
        # K_h*K_w*C*depth_multiplier for DepthwiseConv2D, and in*out for Dense.
        per_position = math.prod(int(d) for d in layer.kernel.shape)
        if isinstance(layer, layers.Dense):
            positions = math.prod(int(d) for d in output_shape[1:-1])
        elif layer.data_format == "channels_first":
            positions = int(output_shape[2]) * int(output_shape[3])
        else:
            positions = int(output_shape[1]) * int(output_shape[2])
        total += positions * per_position
    return int(total)


def kernels(model: "keras.Model") -> list[tuple[str, np.ndarray]]:
    """``(layer name, kernel values)`` of every Conv2D/DepthwiseConv2D/Dense layer."""
    return [(layer.name, np.asarray(layer.kernel.numpy()))
            for layer in _leaf_layers(model) if isinstance(layer, _kernel_layer_types())]


def kernel_sparsity(model: "keras.Model") -> float:
    """Fraction of exact zeros over all Conv2D/DepthwiseConv2D/Dense kernels (0.0 if none)."""
    zeros = 0
    size = 0
    for _, kernel in kernels(model):
        zeros += int(np.count_nonzero(kernel == 0))
        size += int(kernel.size)
    return zeros / size if size else 0.0


class _CountingSink:
    """A write-only file object that only counts bytes: gzipping a large file does not
    have to hold the compressed copy in memory."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def gzip_size(path: Path) -> int:
    """Bytes of ``path`` gzipped at level 9 (header with mtime 0: deterministic)."""
    sink = _CountingSink()
    with open(path, "rb") as source, \
            gzip.GzipFile(filename="", mode="wb", compresslevel=9,
                          fileobj=sink, mtime=0) as compressed:  # type: ignore[arg-type]
        for block in iter(lambda: source.read(1 << 20), b""):
            compressed.write(block)
    return sink.size
