"""tasks/device/tensors.py: quantising a runtime's input and de-quantising its output."""

from __future__ import annotations

import numpy as np

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
