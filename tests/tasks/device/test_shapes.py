"""What the harness times is one image in and one row of class scores out: an OpenVINO
IR whose batch is open (as Keras and PyTorch exports give) is fixed to the spec's batch 1
at load, and a model that answers anything else is refused before it is timed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.device import harness
from tests.model_files import dynamic_batch
from tasks.train.model_input import arrange_batch
from tests.tasks.device.test_harness import (HARNESS_SOURCE, harness_args, read_result,
                                             run_harness, variant_entry)


@pytest.fixture
def deployed_harness(tmp_path: Path) -> Path:
    """harness.py with its kinds of task in a folder, as benchmark places it on a device."""
    from tasks.core import device_code

    return device_code.place_harness(tmp_path / "device")


def test_an_ir_with_an_open_batch_is_measured_at_batch_one(
        tiny_project: Any, deployed_harness: Path, tmp_path: Path) -> None:
    import openvino as ov

    entry = variant_entry(tiny_project, "openvino-fp32")
    onnx_file = dynamic_batch(tiny_project.layout.variants / "onnx-fp32" / "model.onnx",
                              tmp_path / "open.onnx")
    ir = tmp_path / "open.xml"
    ov.save_model(ov.convert_model(str(onnx_file)), str(ir), compress_to_fp16=False)
    assert ov.Core().read_model(str(ir)).inputs[0].get_partial_shape().is_dynamic
    args, out = harness_args(tiny_project, entry, tmp_path, artifact=ir)
    completed = run_harness(deployed_harness, args)
    assert completed.returncode == 0, completed.stderr
    result = read_result(out)
    assert result["status"] == "ok", result.get("error")
    (tmp_path / "fixed").mkdir()
    fixed_args, fixed_out = harness_args(tiny_project, entry, tmp_path / "fixed")
    assert run_harness(deployed_harness, fixed_args).returncode == 0
    assert result["accuracy"] == read_result(fixed_out)["accuracy"] > 0.5


@pytest.mark.parametrize(("x_shape", "y_shape", "message"), [
    ((1, 16, 16, 1), (0, 10), "the model answered one image (1, 16, 16, 1) with an output of "
                              "shape (0, 10), not one row of class scores"),
    ((1, 16, 16, 1), (2, 10), "the model answered one image (1, 16, 16, 1) with an output of "
                              "shape (2, 10), not one row of class scores"),
    ((1, 1, 16, 16), (1, 10), "input of shape (1, 1, 16, 16) fed, the spec says (1, 16, 16, 1)"),
])
def test_shapes_other_than_one_image_and_one_row_are_refused(
        x_shape: tuple[int, ...], y_shape: tuple[int, ...], message: str) -> None:
    spec = {"input": {"shape": [1, 16, 16, 1]}}
    with pytest.raises(ValueError) as refused:
        harness.check_shapes(np.zeros(x_shape), np.zeros(y_shape), spec)
    assert str(refused.value) == message
    harness.check_shapes(np.zeros((1, 16, 16, 1)), np.zeros((1, 10)), spec)


def test_nchw_inputs_are_arranged_channels_first_and_normalised() -> None:
    image = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3) / 12
    spec = {"layout": "NCHW", "normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0]},
            "shape": [1, 3, 2, 2], "dtype": "float32", "quantization": None}
    fed = harness.quantize_input(image, spec)
    assert fed.shape == (1, 3, 2, 2)
    expected = (image - 0.5) / np.array([0.25, 0.5, 1.0], np.float32)
    np.testing.assert_allclose(fed[0], np.transpose(expected, (2, 0, 1)), rtol=1e-6)
    assert json.dumps(harness.arrange_batch(image[np.newaxis], {}).tolist()) == json.dumps(
        image[np.newaxis].tolist()), "edgeflow's own models: as they are"


@pytest.mark.parametrize("spec", [
    {}, {"layout": "NHWC"}, {"layout": "NCHW"},
    {"layout": "NCHW", "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}},
    {"layout": "NHWC", "normalize": {"mean": [0.0, 0.5, 1.0], "std": [1.0, 2.0, 0.5]}}])
def test_the_orchestrator_arranges_images_exactly_as_the_harness_does(spec: dict[str, Any]) -> None:
    images = np.random.default_rng(7).random((4, 5, 6, 3), dtype=np.float32)
    ours, theirs = arrange_batch(images, spec), harness.arrange_batch(images, spec)
    assert ours.dtype == theirs.dtype == np.float32 and ours.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(ours, theirs)
    assert ours.shape == ((4, 3, 5, 6) if spec.get("layout") == "NCHW" else (4, 5, 6, 3))
