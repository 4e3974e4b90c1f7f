"""A model the user brings (``model: {source: file, path: ...}``): a Keras 3 ``.keras``
file, a TensorFlow SavedModel folder or an ONNX file (PyTorch exports included).

:class:`ModelFileOptions` is its ``params.yaml`` section; :func:`inspect_model_file`
reads what the file says about itself (its kind, its one image input in NHWC or NCHW,
its one output's width) without running it, and refuses with one line what cannot be
an image classifier: a missing path, a file that is no model, a truncated ONNX or
``.keras`` file, an ONNX file ONNX Runtime cannot load (with its reason), two inputs,
several outputs (a detector), an input that is not an image.

A model's output contract is its ``format`` (:data:`OUTPUT_FORMATS`): ``classifier``
(the default: one score per class, ``(batch, classes)``) or ``yolo``, an Ultralytics YOLO
(v8 and later) detection export, ``(1, 4 + C, N)``: N candidate boxes, each ``cx, cy, w,
h`` in input pixels then C class scores (the detection kind's "yolo" layout,
``tasks/device/kinds/detection.py``); its class count C is ``4 + C`` less 4, and must be
the data's. Ultralytics letterboxes its images with grey borders (114), RGB, pixels / 255:
``data.fit: letterbox_grey`` pre-processes as it does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from tasks.core.strict import StrictModel, number

Channel = Annotated[float, number(-1e6, 1e6)]
Spread = Annotated[float, number(0, 1e6, above=True)]
KINDS = ("keras", "saved_model", "onnx")
YOLO_BOX_VALUES = 4  # cx, cy, w, h before the class scores of a YOLO output's rows


class FineTuneOptions(StrictModel):
    """Training a Keras model you bring further on the project's data
    (``train.fine_tune``); a head whose width is not the data's class count is replaced by
    one on the model's features: the output of ``feature_layer``, by default the last
    layer before its classifier head (see :func:`feature_layer`)."""

    epochs: Annotated[int, Field(ge=1, le=10_000)] = 5
    learning_rate: Annotated[float, number(0, 1, above=True)] = 1e-4
    freeze_base: bool = Field(default=True, description="train only the classification head")
    feature_layer: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="the layer whose output a new head reads (named: a new head even when "
                    "the class count matches)")
    batch_norm: Literal["reestimate", "keep"] = Field(
        default="reestimate",
        description="reestimate: batch-norm moving statistics from the train images before "
                    "fine-tuning (and after every epoch when the base trains), as train "
                    "does; keep: the file's own (a well-trained base whose statistics fit)")


class ModelFileOptions(StrictModel):
    """A trained model from a file. ``mean``/``std``: the normalisation the model was
    trained with, per channel, on pixels in [0, 1] (ImageNet's for a torchvision model;
    ``std: [0.00392]`` for a model that expects 0-255); ``layout``: its input's, read
    from the file unless given. Fine-tuning is ``train.fine_tune``."""

    architecture: Literal["file"] = "file"  # set from `source: file`; not written by users
    source: Literal["file"] = "file"
    path: Path
    layout: Literal["auto", "NHWC", "NCHW"] = "auto"
    mean: list[Channel] | None = Field(default=None, min_length=1, max_length=4)
    std: list[Spread] | None = Field(default=None, min_length=1, max_length=4)
    task: str = Field(default="classification", min_length=1, max_length=100,
                      description="the kind of task the model does: must be data.task")
    format: Literal["classifier", "yolo"] = Field(
        default="classifier",
        description="its output: classifier, one score per class (batch, classes); yolo, an "
                    "Ultralytics YOLO detection export (1, 4 + classes, boxes), no NMS")


class ModelFileError(ValueError):
    """A model file that cannot be used, in one line: what is wrong, what is allowed."""


@dataclass(frozen=True)
class ModelFile:
    """What a model file says about itself: its kind (:data:`KINDS`), its input's
    layout and shape without the batch (in that layout), and its output's width."""

    kind: str
    path: Path
    layout: str
    input_shape: tuple[int, int, int]
    classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels), whatever the layout."""
        if self.layout == "NCHW":
            channels, height, width = self.input_shape
            return height, width, channels
        return self.input_shape


def kind_of(path: Path) -> str:
    """The kind of model at ``path``, from its name (and a SavedModel's folder)."""
    if not path.exists():
        raise ModelFileError(f"model.path {path} does not exist (a .keras file, a SavedModel "
                             "folder or a .onnx file)")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        raise ModelFileError(f"model.path {path} is a folder without saved_model.pb (a .keras "
                             "file, a SavedModel folder or a .onnx file)")
    suffix = path.suffix.lower()
    if suffix in (".keras", ".onnx"):
        return suffix[1:]
    raise ModelFileError(f"model.path {path} is not a .keras file, a SavedModel folder or a "
                         f".onnx file (its suffix is {suffix or 'none'})")


def _layout(dims: list[int | None], declared: str, path: Path) -> str:
    """NHWC or NCHW from a rank-4 input's dims (batch first): the side with 1 or 3
    channels, unless ``declared``."""
    if declared != "auto":
        return declared
    first, last = dims[1] in (1, 3), dims[3] in (1, 3)
    if first != last:
        return "NCHW" if first else "NHWC"
    raise ModelFileError(f"{path.name}: cannot tell the input layout of {_shape_text(dims)} "
                         "(set model.layout: NHWC or NCHW)")


def _shape_text(dims: list[int | None]) -> str:
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in dims) + "]"


def _classifier_classes(path: Path, out: list[int | None]) -> int:
    if len(out) != 2 or out[1] is None:
        raise ModelFileError(f"{path.name}: its output {_shape_text(out)} is not one score "
                             "per class (batch, classes)")
    return int(out[1])


def _yolo_classes(path: Path, out: list[int | None]) -> int:
    if len(out) != 3 or out[0] not in (1, None) or out[1] is None or out[2] is None \
            or out[1] <= YOLO_BOX_VALUES:
        raise ModelFileError(f"{path.name}: its output {_shape_text(out)} is not a YOLO "
                             "detection output (1, 4 + classes, boxes), as model.format yolo "
                             "says (an Ultralytics export without NMS)")
    return int(out[1]) - YOLO_BOX_VALUES


# The class count an output of each model.format reveals, or a ModelFileError.
OUTPUT_FORMATS = {"classifier": _classifier_classes, "yolo": _yolo_classes}


def _checked(path: Path, inputs: list[list[int | None]], outputs: list[list[int | None]],
             declared: str, kind: str, output_format: str = "classifier") -> ModelFile:
    if len(inputs) != 1:
        raise ModelFileError(f"{path.name} has {len(inputs)} inputs; an image classifier "
                             "has one (an image batch)")
    if len(outputs) != 1:
        raise ModelFileError(f"{path.name} has {len(outputs)} outputs (a detector or a "
                             "multi-head model?); an image classifier has one (class scores)")
    dims, out = inputs[0], outputs[0]
    if len(dims) != 4:
        raise ModelFileError(f"{path.name}: its input {_shape_text(dims)} is not an image "
                             "batch (batch, height, width, channels or batch, channels, "
                             "height, width)")
    classes = OUTPUT_FORMATS[output_format](path, out)
    layout = _layout(dims, declared, path)
    shape = tuple(dims[1:])
    channels = shape[0] if layout == "NCHW" else shape[2]
    if channels not in (1, 3):
        raise ModelFileError(f"{path.name}: its input {_shape_text(dims)} has {channels} "
                             f"channels in {layout}; an image has 1 (grey) or 3 (RGB)")
    return ModelFile(kind, path, layout, shape, classes)  # type: ignore[arg-type]


def _onnx_dims(value: object) -> list[int | None]:
    dims = value.type.tensor_type.shape.dim  # type: ignore[attr-defined]
    return [dim.dim_value if dim.HasField("dim_value") else None for dim in dims]


def _inspect_onnx(path: Path, declared: str, output_format: str) -> ModelFile:
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as error:  # noqa: BLE001 - protobuf and checker errors alike
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"{path.name} is not a readable ONNX model ({first[:200]})") from None
    initialisers = {init.name for init in model.graph.initializer}
    inputs = [_onnx_dims(value) for value in model.graph.input if value.name not in initialisers]
    outputs = [_onnx_dims(value) for value in model.graph.output]
    found = _checked(path, inputs, outputs, declared, "onnx", output_format)
    _check_onnx_runtime_loads(path)
    return found


# "[ONNXRuntimeError] : 1 : FAIL : Load model from <path> failed:<reason>", the reason
# sometimes behind the C++ function that raised it ("/onnxruntime_src/...h:46 void f(...) ").
ORT_LOAD_FAILED = re.compile(r"^.*? failed:\s*(?:\S+\.(?:h|cc|cpp):\d+ [^\n]*?\) (?=[A-Z]))?")


def _check_onnx_runtime_loads(path: Path) -> None:
    """ONNX Runtime (the reference every variant of an ONNX model is checked against)
    loads the file: a custom-domain op or an opset it does not support is a model error
    with its reason, not a failure later on."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - ORT raises its own classes for each cause
        reason = " ".join(ORT_LOAD_FAILED.sub("", str(error), count=1).split())
        reason = reason.removeprefix("Fatal error: ") or type(error).__name__
        raise ModelFileError(f"{path.name}: ONNX Runtime cannot load it ({reason[:500]}); an "
                             "ONNX model must use the standard operators of an opset ONNX "
                             "Runtime supports") from None


def _inspect_keras(path: Path, declared: str, output_format: str) -> ModelFile:
    model = load_keras(path)
    inputs = [list(tensor.shape) for tensor in model.inputs]
    outputs = [list(tensor.shape) for tensor in model.outputs]
    return _checked(path, inputs, outputs, declared, kind_of(path), output_format)


def load_keras(path: Path) -> object:
    """A ``.keras`` file as a Keras model, or a SavedModel folder wrapped as one
    (its serving signature as a layer)."""
    import keras

    try:
        if path.is_dir():
            import tensorflow as tf

            signature = tf.saved_model.load(str(path)).signatures.get("serving_default")
            if signature is None:
                raise ModelFileError(f"{path.name} has no serving_default signature to call")
            specs = list(signature.structured_input_signature[1].values())
            inputs = [keras.Input(shape=tuple(spec.shape[1:]), name=f"input{index}")
                      for index, spec in enumerate(specs)]
            layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
            outputs = layer(inputs[0] if len(inputs) == 1 else inputs)
            if isinstance(outputs, dict):
                outputs = list(outputs.values())
            return keras.Model(inputs, outputs)
        _check_zip(path)
        return keras.models.load_model(path, compile=False)
    except ModelFileError:
        raise
    except Exception as error:  # noqa: BLE001 - zip, h5, TF and Keras errors alike
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"{path.name} is not a loadable Keras model ({first[:200]})") from None


def _check_zip(path: Path) -> None:
    """A ``.keras`` file is a zip archive: a truncated or damaged one is said to be so
    (Keras says "File not found" for a file that exists)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path.name} is not a loadable Keras model (not a complete zip "
                             "archive, as a .keras file is: truncated or damaged?)")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        damaged = str(error) or type(error).__name__
    if damaged is not None:
        raise ModelFileError(f"{path.name} is not a loadable Keras model (a damaged zip "
                             f"archive: {damaged} does not read back)")


INSPECTORS = {"keras": _inspect_keras, "saved_model": _inspect_keras, "onnx": _inspect_onnx}


def inspect_model_file(path: Path, declared_layout: str = "auto",
                       output_format: str = "classifier") -> ModelFile:
    """What the file at ``path`` is (see the module's doc), its output read as
    ``output_format`` says (:data:`OUTPUT_FORMATS`); ModelFileError otherwise."""
    return INSPECTORS[kind_of(path)](path, declared_layout, output_format)


# The kind of task each model.format's output is for.
FORMAT_TASKS = {"classifier": "classification", "yolo": "detection"}


def check_task(options: ModelFileOptions, data_task: str) -> None:
    """The model does the data's kind of task (``model.task`` is ``data.task``) with an
    output made for it (``model.format``); ModelFileError naming both sides otherwise."""
    if options.task != data_task:
        raise ModelFileError(f"model.task {options.task} does not match data.task {data_task}: "
                             "the model must do the task its data is prepared for")
    wanted = FORMAT_TASKS[options.format]
    if wanted != options.task:
        raise ModelFileError(f"model.format {options.format} is a {wanted} output; model.task "
                             f"is {options.task}")


def input_spec(model: ModelFile, options: ModelFileOptions,
               image_size: tuple[int, int]) -> dict[str, object]:
    """The model's input as a variant spec states it (batch 1, its layout, the data's
    image size where the file leaves height or width open, its normalisation)."""
    height, width = image_size
    channels = model.image_shape[2]
    shape = [1, channels, height, width] if model.layout == "NCHW" else [1, height, width, channels]
    normalize = None
    if options.mean is not None or options.std is not None:
        normalize = {"mean": list(options.mean or [0.0] * channels),
                     "std": list(options.std or [1.0] * channels)}
    return {"dtype": "float32", "shape": shape, "layout": model.layout, "quantization": None,
            "normalize": normalize}


def _output_width(layer: object) -> int | None:
    """The number of values per image of ``layer``'s one output (None: open, or the
    layer has several outputs or is called more than once)."""
    try:
        output = layer.output  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # a shared layer has no single output
        return None
    if isinstance(output, (list, tuple, dict)):
        return None
    dims = list(output.shape[1:])
    if not dims or any(dim is None for dim in dims):
        return None
    width = 1
    for dim in dims:
        width *= int(dim)
    return width


def feature_layer(model: object, named: str | None, source: str) -> object:
    """The layer whose output a new classifier head reads: ``named`` (from
    ``train.fine_tune.feature_layer``), else the last layer, going back from the output,
    whose output is not the model's class scores. The classifier head of a
    keras.applications MobileNetV3 is a 1x1 conv to the classes, a flatten and a softmax,
    each with one value per class: the features are the 1024 before them, not
    ``layers[-2]`` (the flattened old scores)."""
    import keras

    layers = list(model.layers)  # type: ignore[attr-defined]
    last = ", ".join(layer.name for layer in layers[-6:])
    if named is not None:
        found = next((layer for layer in layers if layer.name == named), None)
        if found is None or isinstance(found, keras.layers.InputLayer) or \
                not _single_output(found):
            raise ModelFileError(f"train.fine_tune.feature_layer {named!r} is not a layer of "
                                 f"{source} with one output (its last layers: {last})")
        return found
    scores = _output_width(layers[-1])
    for layer in reversed(layers):
        if isinstance(layer, keras.layers.InputLayer):
            break
        width = _output_width(layer)
        if width != scores and (width is not None or _single_output(layer)):
            return layer
    raise ModelFileError(f"{source}: found no layer before its classifier head to put a new "
                         f"head on; name one with train.fine_tune.feature_layer (its last "
                         f"layers: {last})")


def _single_output(layer: object) -> bool:
    try:
        return not isinstance(layer.output, (list, tuple, dict))  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


def check_fits(model: ModelFile, image_size: tuple[int, int], color: str, classes: int,
               new_head: bool) -> None:
    """The model takes the data's images and answers its classes (unless its head is to
    be replaced: ``new_head``); ModelFileError names both sides otherwise."""
    height, width, channels = model.image_shape
    wanted = 1 if color == "grayscale" else 3
    size_fits = all(side in (None, want) for side, want in zip((height, width), image_size))
    if not size_fits or channels != wanted:
        sides = "x".join("?" if side is None else str(side) for side in (height, width))
        needed = "grayscale" if channels == 1 else "rgb"
        raise ModelFileError(
            f"{model.path.name} takes {sides} {needed} images ({model.layout}); the data is "
            f"{image_size[0]}x{image_size[1]} {color}: set data.image_size and data.color to "
            "match the model")
    if model.classes != classes and not new_head:
        raise ModelFileError(
            f"{model.path.name} outputs {model.classes} classes; the data has {classes}: "
            "give data with its classes, or fine-tune a Keras model on yours "
            "(train.fine_tune replaces its head)")
