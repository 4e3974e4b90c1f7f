"""tasks/device/tensors.py: quantising a runtime's input and de-quantising its output."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.device import tensors


INT8 = {"dtype": "int8", "quantization": {"scale": 0.05, "zero_point": -10}}


def test_quantize_dequantize_round_trip_int8() -> None:
    rng = np.random.default_rng(0)
    # Inside the representable range: [(-128 + 10) * 0.05, (127 + 10) * 0.05] = [-5.9, 6.85].
    x = rng.uniform(-5.8, 6.8, size=(4, 4, 1)).astype(np.float32)
    q = tensors.quantize_input(x, INT8)
    assert q.dtype == np.int8 and q.shape == (1, 4, 4, 1)
    assert q.flags["C_CONTIGUOUS"]
    back = tensors.dequantize_output(q, INT8)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back[0], x, atol=0.05 / 2 + 1e-6)
    # The zero point maps 0.0 exactly.
    zero = tensors.quantize_input(np.zeros((1, 1, 1), np.float32), INT8)
    assert int(zero.item()) == -10
    assert tensors.dequantize_output(zero, INT8).item() == 0.0


def test_quantize_clips_at_int8_bounds() -> None:
    x = np.array([[[100.0], [-100.0], [6.85], [-5.9]]], dtype=np.float32)
    q = tensors.quantize_input(x, INT8)
    assert q.reshape(-1).tolist() == [127, -128, 127, -128]
    np.testing.assert_allclose(tensors.dequantize_output(q, INT8).reshape(-1),
                               [6.85, -5.9, 6.85, -5.9], rtol=1e-6)


def test_float_spec_only_adds_the_batch_dimension() -> None:
    x = np.arange(6, dtype=np.float64).reshape(2, 3, 1)
    spec = {"dtype": "float32", "quantization": None}
    batch = tensors.quantize_input(x, spec)
    assert batch.dtype == np.float32 and batch.shape == (1, 2, 3, 1)
    np.testing.assert_array_equal(batch[0], x)
    np.testing.assert_array_equal(tensors.dequantize_output(batch, spec), batch)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
def test_quantize_rounds_half_to_even_and_clips_at_the_dtypes_own_bounds(dtype: str) -> None:
    """Scale 0.5, zero point 3: real r is round(2r) + 3, rounded half to even before the
    (odd) zero point is added, clipped to the dtype's own range, never another's."""
    info = np.iinfo(dtype)
    spec = {"dtype": dtype, "quantization": {"scale": 0.5, "zero_point": 3}}
    real = lambda q: (q - 3) * 0.5  # noqa: E731
    values = [0.0, 0.25, 0.75, -0.25, 1.25,  # 2r: 0.5 -> 0, 1.5 -> 2, -0.5 -> 0, 2.5 -> 2
              real(info.max), real(info.max) + 0.2, real(info.max) + 0.25, real(info.max) + 9,
              real(info.min), real(info.min) - 0.2, real(info.min) - 9]
    q = tensors.quantize_input(np.asarray(values, np.float64).reshape(1, -1, 1), spec)
    assert q.dtype == np.dtype(dtype) and q.shape == (1, 1, len(values), 1)
    lo, hi = int(info.min), int(info.max)
    expected = [3, 3, 5, 3, 5, hi, hi, hi, hi, lo, lo, lo]
    expected[:5] = [min(max(v, lo), hi) for v in expected[:5]]
    assert q.reshape(-1).tolist() == expected


def test_dequantize_is_zero_point_then_scale() -> None:
    spec = {"dtype": "uint8", "quantization": {"scale": 0.25, "zero_point": 128}}
    y = np.array([[0, 127, 128, 129, 255]], np.uint8)
    out = tensors.dequantize_output(y, spec)
    assert out.dtype == np.float32
    assert out.tolist() == [[-32.0, -0.25, 0.0, 0.25, 31.75]]
    # A float output (no quantisation or none given) is only made float32.
    for float_spec in ({}, {"quantization": None}):
        plain = tensors.dequantize_output(np.array([[1.5, -2.0]], np.float64), float_spec)
        assert plain.dtype == np.float32 and plain.tolist() == [[1.5, -2.0]]


def test_predict_quantises_with_the_input_spec_and_reads_with_the_output_spec() -> None:
    """Input and output quantisations differ, so swapping them gives other numbers."""
    spec = {"input": {"dtype": "int8", "shape": [1, 1, 2, 1],
                      "quantization": {"scale": 0.5, "zero_point": -1}},
            "output": {"dtype": "int8", "quantization": {"scale": 0.1, "zero_point": 2}}}
    fed: list[np.ndarray] = []

    class Runner:
        def infer(self, x: np.ndarray) -> np.ndarray:
            fed.append(x)
            return (x.reshape(1, 2) * 2).astype(np.int8)  # (1, classes)

    images = np.array([[[[1.0], [2.0]]], [[[0.0], [-1.5]]]], np.float32)  # (2, 1, 2, 1)
    logits = tensors.predict(Runner(), images, spec)
    assert [x.tolist() for x in fed] == [[[[[1], [3]]]], [[[[-1], [-4]]]]]
    assert all(x.dtype == np.int8 and x.shape == (1, 1, 2, 1) for x in fed)
    assert logits.shape == (2, 2) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, [[0.0, 0.4], [-0.4, -1.0]], atol=1e-6)


def test_arrange_batch_normalises_per_channel_then_puts_channels_first() -> None:
    images = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3) / 12
    spec = {"normalize": {"mean": [0.5, 0.25, 0.0], "std": [0.5, 0.25, 2.0]}, "layout": "NCHW"}
    arranged = tensors.arrange_batch(images, spec)
    expected = (images - [0.5, 0.25, 0.0]) / [0.5, 0.25, 2.0]
    assert arranged.shape == (1, 3, 2, 2) and arranged.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(arranged, expected.transpose(0, 3, 1, 2), rtol=1e-6)
    nhwc = tensors.arrange_batch(images, {**spec, "layout": "NHWC"})
    np.testing.assert_allclose(nhwc, expected, rtol=1e-6)
    assert tensors.arrange_batch(images, {"normalize": None}).tolist() == images.tolist()
