"""Reading a model you bring (tasks/models/model_file.py): its kind, input layout and
shape, and class count from the file itself; and every file that cannot be an image
classifier refused in one line that says what it is and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.models.model_file import (ModelFile, ModelFileError, ModelFileOptions, check_fits,
                                     input_spec, inspect_model_file)
from tests.model_files import bring, linear_onnx


@pytest.fixture(scope="module")
def files(tiny_project: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    layout = tiny_project.layout
    return bring(layout.base_model, layout.variants / "onnx-fp32" / "model.onnx",
                 tmp_path_factory.mktemp("brought"))


@pytest.mark.parametrize(("kind", "layout", "shape"), [
    ("keras", "NHWC", (16, 16, 1)), ("saved_model", "NHWC", (16, 16, 1)),
    ("onnx", "NHWC", (16, 16, 1)), ("nchw", "NCHW", (1, 16, 16))])
def test_each_kind_says_its_layout_shape_and_classes(files: dict[str, Path], kind: str,
                                                    layout: str, shape: tuple[int, ...]) -> None:
    found = inspect_model_file(files[kind])
    assert (found.kind, found.layout, found.input_shape, found.classes) == (
        {"nchw": "onnx"}.get(kind, kind), layout, shape, 10)
    assert found.image_shape == (16, 16, 1)


def onnx_graph(path: Path, inputs: list[list[Any]], outputs: list[list[Any]]) -> Path:
    """A graph of Identity-like nodes with these input and output shapes."""
    import onnx
    from onnx import TensorProto, helper

    graph_inputs = [helper.make_tensor_value_info(f"in{i}", TensorProto.FLOAT, shape)
                    for i, shape in enumerate(inputs)]
    graph_outputs = [helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, shape)
                     for i, shape in enumerate(outputs)]
    nodes = [helper.make_node("Identity", [f"in{min(i, len(inputs) - 1)}"], [f"out{i}"])
             for i in range(len(outputs))]
    model = helper.make_model(helper.make_graph(nodes, "g", graph_inputs, graph_outputs),
                              opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def truncated(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes()[:len(source.read_bytes()) // 2])
    return target


@pytest.mark.parametrize(("make", "message"), [
    (lambda d, f: d / "missing.onnx",
     "model.path {d}/missing.onnx does not exist (a .keras file, a SavedModel folder or a "
     ".onnx file)"),
    (lambda d, f: (d / "notes.txt").write_text("hello") and d / "notes.txt",
     "model.path {d}/notes.txt is not a .keras file, a SavedModel folder or a .onnx file "
     "(its suffix is .txt)"),
    (lambda d, f: (d / "empty").mkdir() or d / "empty",
     "model.path {d}/empty is a folder without saved_model.pb (a .keras file, a SavedModel "
     "folder or a .onnx file)"),
    (lambda d, f: (d / "fake.onnx").write_text("not protobuf") and d / "fake.onnx",
     "fake.onnx is not a readable ONNX model ("),
    (lambda d, f: truncated(f["onnx"], d / "half.onnx"), "half.onnx is not a readable ONNX model ("),
    (lambda d, f: (d / "fake.keras").write_bytes(b"PK\x03\x04junk") and d / "fake.keras",
     "fake.keras is not a loadable Keras model ("),
    (lambda d, f: truncated(f["keras"], d / "half.keras"),
     "half.keras is not a loadable Keras model (not a complete zip archive, as a .keras file "
     "is: truncated or damaged?)"),
    (lambda d, f: linear_onnx(d / "custom.onnx", 13, op="FancyGemm", domain="com.acme"),
     "custom.onnx: ONNX Runtime cannot load it (com.acme:FancyGemm(-1) is not a registered "
     "function/op); an ONNX model must use the standard operators of an opset ONNX Runtime "
     "supports"),
    (lambda d, f: linear_onnx(d / "future.onnx", 30),
     "future.onnx: ONNX Runtime cannot load it (ONNX Runtime only *guarantees* support for "
     "models stamped with official released onnx opset versions. Opset 30 is under "
     "development"),
    (lambda d, f: onnx_graph(d / "two.onnx", [[1, 16, 16, 1], [1, 4]], [[1, 10]]),
     "two.onnx has 2 inputs; an image classifier has one (an image batch)"),
    (lambda d, f: onnx_graph(d / "detector.onnx", [[1, 16, 16, 1]], [[1, 100, 4], [1, 100]]),
     "detector.onnx has 2 outputs (a detector or a multi-head model?); an image classifier "
     "has one (class scores)"),
    (lambda d, f: onnx_graph(d / "flat.onnx", [[1, 256]], [[1, 10]]),
     "flat.onnx: its input [1, 256] is not an image batch (batch, height, width, channels or "
     "batch, channels, height, width)"),
    (lambda d, f: onnx_graph(d / "masks.onnx", [[1, 16, 16, 1]], [[1, 16, 16, 2]]),
     "masks.onnx: its output [1, 16, 16, 2] is not one score per class (batch, classes)"),
    (lambda d, f: onnx_graph(d / "square.onnx", [[1, 3, 16, 3]], [[1, 10]]),
     "square.onnx: cannot tell the input layout of [1, 3, 16, 3] (set model.layout: NHWC or "
     "NCHW)"),
    (lambda d, f: onnx_graph(d / "spectra.onnx", [[1, 16, 16, 7]], [["n", 10]]),
     "spectra.onnx: cannot tell the input layout of [1, 16, 16, 7] (set model.layout: NHWC or "
     "NCHW)"),
])
def test_a_file_that_is_no_image_classifier_is_one_line(files: dict[str, Path], tmp_path: Path,
                                                       make: Any, message: str) -> None:
    path = make(tmp_path, files)
    with pytest.raises(ModelFileError) as refused:
        inspect_model_file(path)
    text = str(refused.value)
    assert text.startswith(message.format(d=tmp_path)) and "\n" not in text


def test_a_declared_layout_is_taken_and_its_channels_checked(tmp_path: Path) -> None:
    path = onnx_graph(tmp_path / "square.onnx", [[1, 3, 16, 3]], [[1, 10]])
    assert inspect_model_file(path, "NCHW").input_shape == (3, 16, 3)
    odd = onnx_graph(tmp_path / "odd.onnx", [[1, 16, 16, 7]], [[1, 10]])
    with pytest.raises(ModelFileError, match=r"^odd.onnx: its input \[1, 16, 16, 7\] has 7 "
                                             r"channels in NHWC; an image has 1 \(grey\) or 3"):
        inspect_model_file(odd, "NHWC")


def test_the_model_must_take_the_data_and_answer_its_classes() -> None:
    model = ModelFile("onnx", Path("net.onnx"), "NCHW", (3, 224, 224), 1000)
    check_fits(model, (224, 224), "rgb", 1000, new_head=False)
    with pytest.raises(ModelFileError) as wrong_size:
        check_fits(model, (32, 32), "grayscale", 1000, new_head=False)
    assert str(wrong_size.value) == (
        "net.onnx takes 224x224 rgb images (NCHW); the data is 32x32 grayscale: set "
        "data.image_size and data.color to match the model")
    with pytest.raises(ModelFileError) as wrong_classes:
        check_fits(model, (224, 224), "rgb", 10, new_head=False)
    assert str(wrong_classes.value).startswith("net.onnx outputs 1000 classes; the data has 10:")
    check_fits(model, (224, 224), "rgb", 10, new_head=True)  # fine-tuning replaces the head
    # Height and width left open by the file take the data's.
    check_fits(ModelFile("onnx", Path("any.onnx"), "NCHW", (3, None, None), 10),  # type: ignore[arg-type]
               (96, 96), "rgb", 10, new_head=False)


def test_the_input_spec_is_batch_one_in_its_layout_with_its_normalisation() -> None:
    model = ModelFile("onnx", Path("net.onnx"), "NCHW", (3, None, None), 10)  # type: ignore[arg-type]
    options = ModelFileOptions(path=Path("net.onnx"), mean=[0.485, 0.456, 0.406],
                               std=[0.229, 0.224, 0.225])
    assert input_spec(model, options, (96, 128)) == {
        "dtype": "float32", "shape": [1, 3, 96, 128], "layout": "NCHW", "quantization": None,
        "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    plain = ModelFile("keras", Path("m.keras"), "NHWC", (16, 16, 1), 10)
    spec = input_spec(plain, ModelFileOptions(path=Path("m.keras"), std=[0.5]), (16, 16))
    assert spec["shape"] == [1, 16, 16, 1] and spec["normalize"] == {"mean": [0.0], "std": [0.5]}
