"""ONNX -> TFLite through onnx2tf in its own environment: the command line per
precision and layout, calibration handed over in NHWC and normalised, fp16 not offered,
an environment that cannot be had is a skip with its reason, onnx2tf's exit handled,
and real conversions of a PyTorch export (tests/data/torch_cnn16.onnx: a small CNN
trained on the digits with PyTorch 2.13 and exported by ``torch.onnx.export``, NCHW,
batch left open; tests/data/make_torch_cnn.py made it) checked against ONNX Runtime."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tasks.models.formats import Skipped, SourceModel
from tasks.models.formats import onnx_to_tflite
from tasks.models.formats.base import ExportRequest, QuantizationParams
from tasks.models.formats.onnx_to_tflite import RECIPES, nhwc, onnx2tf_arguments
from tasks.models.tool_envs import ToolEnv, ToolUnavailable

TORCH_CNN = Path(__file__).resolve().parents[3] / "data" / "torch_cnn16.onnx"


def digits(count: int, offset: int = 0) -> np.ndarray:
    """``count`` digits at 16x16 in [0, 1], NHWC, as prepare makes them."""
    from PIL import Image
    from sklearn.datasets import load_digits

    images = load_digits().images[offset:offset + count] / 16.0
    resized = [np.asarray(Image.fromarray((image * 255).astype(np.uint8)).resize(
        (16, 16), Image.BILINEAR), np.float32) / 255.0 for image in images]
    return np.stack(resized)[..., None]


def source(tmp_path: Path, normalize: dict[str, list[float]] | None = None) -> SourceModel:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "model.onnx"
    shutil.copyfile(TORCH_CNN, path)
    spec = {"shape": [1, 1, 16, 16], "layout": "NCHW", "normalize": normalize}
    return SourceModel("base", None, None, (1, 16, 16), path, spec)


def request(model: SourceModel, precision: str, tmp_path: Path, calibration: np.ndarray,
            **options: object) -> ExportRequest:
    out = tmp_path / precision
    out.mkdir()
    return ExportRequest(model, precision, out, calibration, QuantizationParams(**options))


# ------------------------------------------------------------------- the command line
def test_an_nchw_model_is_turned_nhwc_and_an_nhwc_one_keeps_its_input(tmp_path: Path) -> None:
    model, out = tmp_path / "m.onnx", tmp_path / "out"
    assert onnx2tf_arguments(model, out, RECIPES["fp32"], "image", "NCHW", None) == [
        "-i", str(model), "-o", str(out), "-b", "1"]
    assert onnx2tf_arguments(model, out, RECIPES["fp32"], "image", "NHWC", None)[-2:] == [
        "-kat", "image"]


def test_int8_is_calibrated_on_normalised_data_and_per_channel_unless_asked(
        tmp_path: Path) -> None:
    calibration = tmp_path / "calibration.npy"
    arguments = onnx2tf_arguments(tmp_path / "m.onnx", tmp_path, RECIPES["int8"], "x", "NCHW",
                                  calibration)
    assert arguments[6:] == ["-oiqt", "-iqd", "int8", "-oqd", "int8",
                             "-cind", "x", str(calibration), "[[[[0.0]]]]", "[[[[1.0]]]]"]
    per_tensor = onnx2tf_arguments(tmp_path / "m.onnx", tmp_path, RECIPES["int8"], "x", "NCHW",
                                   calibration, per_channel=False)
    assert per_tensor[11:13] == ["-qt", "per-tensor"]
    # Dynamic range weights are per tensor whatever per_channel says (LiteRT refuses
    # onnx2tf's per-channel ones), and uncalibrated.
    assert RECIPES["dynamic"].flags == ("-odrqt", "-qt", "per-tensor")
    assert not RECIPES["dynamic"].calibrated and not RECIPES["fp32"].calibrated


def test_calibration_arranged_nchw_goes_back_to_nhwc() -> None:
    batch = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # N, C, H, W
    back = nhwc(batch, "NCHW")
    assert back.shape == (2, 4, 5, 3)
    assert back[1, 2, 3, 0] == batch[1, 0, 2, 3] and back[0, 1, 4, 2] == batch[0, 2, 1, 4]
    assert np.array_equal(nhwc(batch, "NHWC"), batch)


def test_the_input_is_the_one_graph_input_that_is_no_initializer(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    assert onnx_to_tflite.onnx_input_name(TORCH_CNN) == "image"
    weight = numpy_helper.from_array(np.ones((4,), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [4])],  # old exports list it
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    onnx.save(helper.make_model(graph), str(tmp_path / "listed.onnx"))
    assert onnx_to_tflite.onnx_input_name(tmp_path / "listed.onnx") == "x"
    two = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [4]) for name in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    onnx.save(helper.make_model(two), str(tmp_path / "two.onnx"))
    with pytest.raises(ValueError, match=r"^two.onnx has 2 inputs \(a, b\); one image input"):
        onnx_to_tflite.onnx_input_name(tmp_path / "two.onnx")


# ---------------------------------------------------------- skips and onnx2tf's exit
def test_fp16_is_not_offered_and_no_environment_is_made_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: object) -> None:
        raise AssertionError("no environment is needed to refuse fp16")

    monkeypatch.setattr(onnx_to_tflite, "environment", never)
    with pytest.raises(Skipped, match=r"^from ONNX: onnx2tf's float16 model takes, returns and "
                                      r"computes float16; edgeflow's fp16 is fp16 weights"):
        onnx_to_tflite.onnx_tflite_bytes(request(source(tmp_path), "fp16", tmp_path,
                                                 digits(4)), "fp16", tmp_path)


def test_int8_of_a_yolo_detector_is_not_offered_with_the_measured_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: object) -> None:
        raise AssertionError("no environment is needed to refuse a YOLO's int8")

    monkeypatch.setattr(onnx_to_tflite, "environment", never)
    from dataclasses import replace

    yolo = replace(source(tmp_path), output={"format": "yolo"})
    with pytest.raises(Skipped, match=r"^from ONNX: onnx2tf's full-integer YOLO does not run: "
                                      r"LiteRT's XNNPACK cannot prepare its int8 graph"):
        onnx_to_tflite.onnx_tflite_bytes(request(yolo, "int8", tmp_path, digits(4)), "int8",
                                         tmp_path)


def test_an_environment_that_cannot_be_had_skips_with_its_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*_: object) -> None:
        raise ToolUnavailable("no Python 3.12 here (...): set EDGEFLOW_PYTHON_3_12 to one")

    monkeypatch.setattr(onnx_to_tflite, "environment", unavailable)
    with pytest.raises(Skipped) as skipped:
        onnx_to_tflite.onnx_tflite_bytes(request(source(tmp_path), "fp32", tmp_path, digits(4)),
                                         "fp32", tmp_path)
    assert str(skipped.value) == ("ONNX -> TFLite needs onnx2tf's environment: no Python 3.12 "
                                  "here (...): set EDGEFLOW_PYTHON_3_12 to one")


def fake_onnx2tf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, code: int, writes: bool,
                 output: str) -> list[list[str]]:
    """onnx2tf replaced by a function that writes (or not) the float32 model and exits
    with ``code``, printing ``output``; returns the argument lists it was given."""
    calls: list[list[str]] = []
    folder = tmp_path / "env"
    (folder / "lib" / "python3.12" / "site-packages" / "onnx2tf-9.8.7.dist-info").mkdir(
        parents=True)

    def run(self: ToolEnv, arguments: list[str], cwd: Path,
            timeout: float) -> subprocess.CompletedProcess[str]:
        calls.append(list(arguments))
        out = Path(arguments[arguments.index("-o") + 1])
        if writes:
            out.mkdir(parents=True)
            (out / "model_float32.tflite").write_bytes(b"flatbuffer")
        return subprocess.CompletedProcess(arguments, code, output)

    monkeypatch.setattr(onnx_to_tflite, "environment",
                        lambda lock: ToolEnv("onnx2tf", folder, "3.12.1"))
    monkeypatch.setattr(ToolEnv, "run", run)
    return calls


def test_a_model_written_before_onnx2tf_failed_is_used_and_the_failure_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = source(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    calls = fake_onnx2tf(monkeypatch, tmp_path, 1, True, "converting\nint16 check failed\n")
    flatbuffer, details = onnx_to_tflite.onnx_tflite_bytes(
        request(model, "fp32", tmp_path, digits(4)), "fp32", work)
    assert flatbuffer == b"flatbuffer"
    assert details == {"converter": "onnx2tf 9.8.7", "converter_python": "3.12.1",
                       "converter_note": "onnx2tf exited 1 after writing model_float32.tflite: "
                                         "int16 check failed"}
    # onnx2tf is given a copy in its work folder, never the source model itself.
    assert calls[0][1] == str(work / "model.onnx") != str(model.onnx_path)


def test_no_model_written_is_an_error_with_onnx2tfs_last_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_onnx2tf(monkeypatch, tmp_path, 1, False, "a\nb\nc\nNotImplementedError: Einsum\n")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(RuntimeError, match=r"^onnx2tf wrote no model_float32.tflite \(exit 1\): "
                                           r"b \| c \| NotImplementedError: Einsum$"):
        onnx_to_tflite.onnx_tflite_bytes(request(source(tmp_path), "fp32", tmp_path, digits(4)),
                                         "fp32", work)


# ------------------------------------------------------ real conversions of a PyTorch CNN
def onnx_logits(model: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": np.transpose(images, (0, 3, 1, 2))})[0]


def tflite_logits(model: bytes, images: np.ndarray, spec: dict) -> np.ndarray:
    from tasks.core import device_code

    runtimes, tensors = device_code.load("runtimes"), device_code.load("tensors")
    with tempfile.NamedTemporaryFile(suffix=".tflite") as file:
        file.write(model)
        file.flush()
        runner = runtimes.load_runner("tflite", file.name, 1, {"execution_precision": "f32"})
        return tensors.predict(runner, images, spec)


def export(model: SourceModel, fmt: str, precision: str, tmp_path: Path,
           calibration: np.ndarray, **options: object):  # type: ignore[no-untyped-def]
    from tasks.models.formats import FORMATS

    return FORMATS[fmt].export(request(model, precision, tmp_path, calibration, **options))


def test_a_pytorch_cnn_in_fp32_matches_onnx_runtime_reading_nhwc(tmp_path: Path) -> None:
    model = source(tmp_path)
    before = hashlib.sha256(model.onnx_path.read_bytes()).hexdigest()  # type: ignore[union-attr]
    exported = export(model, "tflite", "fp32", tmp_path, digits(8, 100))
    assert exported.spec["input"] == {"dtype": "float32", "quantization": None,
                                      "shape": [1, 16, 16, 1], "layout": "NHWC"}
    assert exported.details["converter"] == "onnx2tf 2.6.9"
    assert exported.details["converter_python"].startswith("3.12.")
    # onnx2tf marks its float model fp16-computable; removed, so that every CPU runs it
    # in f32 (checked on the bytes: this CPU may lack fp16 arithmetic).
    assert b"reduced_precision_support" not in exported.main_file.read_bytes()
    images = digits(40, 1000)
    difference = np.abs(tflite_logits(exported.main_file.read_bytes(), images, exported.spec)
                        - onnx_logits(TORCH_CNN, images))
    assert difference.max() < 1e-4
    # onnx2tf rewrites the file it is given: the source stays as it was.
    assert hashlib.sha256(model.onnx_path.read_bytes()).hexdigest() == before  # type: ignore[union-attr]


def test_a_pytorch_cnn_in_int8_is_calibrated_on_the_normalised_split(tmp_path: Path) -> None:
    calibration = digits(64, 200)
    plain = export(source(tmp_path / "plain"), "tflite", "int8",
                   tmp_path / "plain", np.transpose(calibration, (0, 3, 1, 2)))
    quantization = plain.spec["input"]["quantization"]
    assert plain.spec["input"]["dtype"] == "int8" and plain.spec["output"]["dtype"] == "int8"
    # Pixels in [0, 1] (the calibration's range) over 256 levels.
    assert quantization["scale"] == pytest.approx(1 / 255, rel=1e-3)
    assert quantization["zero_point"] == -128
    images = digits(120, 1200)
    agreement = np.mean(np.argmax(tflite_logits(plain.main_file.read_bytes(), images,
                                                plain.spec), axis=1)
                        == np.argmax(onnx_logits(TORCH_CNN, images), axis=1))
    assert agreement >= 0.95
    # A source trained on (x - 0.5) / 0.25 is calibrated on its inputs' range, [-2, 2].
    normalised = {"mean": [0.5], "std": [0.25]}
    arranged = (np.transpose(calibration, (0, 3, 1, 2)) - 0.5) / 0.25
    wide = export(source(tmp_path / "wide", normalised), "tflite", "int8", tmp_path / "wide",
                  arranged.astype(np.float32))
    assert wide.spec["input"]["quantization"]["scale"] == pytest.approx(4 / 255, rel=1e-3)


def test_a_pytorch_cnn_reaches_tflite_micro_with_its_arena(tmp_path: Path) -> None:
    exported = export(source(tmp_path), "tflm", "int8", tmp_path,
                      np.transpose(digits(32, 300), (0, 3, 1, 2)))
    assert exported.details["converter"] == "onnx2tf 2.6.9"
    assert exported.details["arena_bytes"] > 0 and "CONV_2D" in exported.details["ops"]
    assert "kTensorArenaSize" in (exported.main_file.parent / "model_data.h").read_text()
