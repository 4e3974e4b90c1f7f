"""What every exporter shares: the source model it reads, the request it is given (with
the quantisation options, :class:`QuantizationParams`), what it returns, how it says it
cannot run here (:class:`Skipped`), and the :class:`Format` a registry entry is. The
exporter modules import this, never the registry (:mod:`tasks.models.formats`), so the
registry can import them without a circle."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal

from pydantic import Field

from tasks.core.bounds import MAX_SAMPLES
from tasks.core.strict import StrictModel, count

if TYPE_CHECKING:  # annotations only: every command's start reads the format registry
    import numpy as np


@dataclass(frozen=True)
class SourceModel:
    """A trained model as the exporters read it (``models/base`` or a pruned copy): a
    Keras model and its SavedModel, a SavedModel alone or an ONNX model (a model you
    bring), with its input spec where it is not edgeflow's own (NHWC, [0, 1])."""

    name: str
    keras_path: Path | None
    saved_model_dir: Path | None
    input_shape: tuple[int, int, int]  # without the batch, in the input's layout
    onnx_path: Path | None = None
    input: dict[str, Any] | None = None
    # A detector you brought: its output's layout (source.json's "output", e.g.
    # {"format": "yolo"}); None: edgeflow's own output for the task.
    output: dict[str, Any] | None = None

    def float_spec(self) -> dict[str, Any]:
        """The spec of an artifact of this source that takes and returns float32."""
        spec = float_spec(self.input_shape)
        if self.input:
            spec["input"] = {**spec["input"], **self.input}
        return spec

    def require_saved_model(self) -> Path:
        """The SavedModel TensorFlow's exporters start from; :class:`Skipped` where the
        source has none (an ONNX model you brought goes to TFLite through onnx2tf:
        :mod:`tasks.models.formats.onnx_to_tflite`)."""
        if self.saved_model_dir is None:
            raise Skipped(f"needs a SavedModel; the source {self.name} has none")
        return self.saved_model_dir


@dataclass(frozen=True)
class Exported:
    """What an exporter wrote: the file the runtime loads first, every file that
    must travel with it to a device (its size is the variant's size), the input/output
    spec the harness feeds by, and ``extras``: companions kept beside the artifact but
    never deployed (C sources for an MCU build, a compiler log)."""

    main_file: Path
    files: tuple[Path, ...]
    spec: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)  # format-specific facts
    # What the conversion check runs, when the artifact itself needs hardware absent
    # here (an Edge TPU model is checked through the int8 model it was compiled from).
    check_file: Path | None = None
    check_runtime: str | None = None
    extras: tuple[Path, ...] = ()


class QuantizationParams(StrictModel):
    """Calibration of the quantised precisions: only the calibration split is used."""

    calibration_samples: Annotated[int, count(1, MAX_SAMPLES)] = Field(
        default=200, description="images from the calib split (at most its size)")
    onnx_calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    # 7-bit weights: x86 CPUs without VNNI saturate 8-bit products (measured here: int8-qdq
    # agreement with Keras fell to 89%); harmless elsewhere, so safe as the default.
    onnx_reduce_range: bool = True
    openvino_preset: Literal["performance", "mixed"] = "performance"


@dataclass(frozen=True)
class ExportRequest:
    """Everything an exporter may use. Calibration images come from the calib split
    only; the validation split serves accuracy-aware quantisation; never the test split."""

    source: SourceModel
    precision: str
    out_dir: Path
    calibration: np.ndarray
    quantization: QuantizationParams
    validation: tuple[np.ndarray, np.ndarray] | None = None
    max_accuracy_drop: float = 0.01
    # A folder shared by the exports of one source model, so an intermediate (the fp32
    # ONNX graph every ONNX precision starts from) is produced once per source.
    scratch: Path | None = None


Exporter = Callable[[ExportRequest], Exported]


class Skipped(Exception):
    """An exporter cannot run here (a missing compiler...): the variant is reported as
    skipped with this reason, neither a crash nor a silent omission."""


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    runtime: str
    precisions: tuple[str, ...]
    export: Exporter


# The precision a variant's float (non-quantised) arithmetic runs in, by its precision
# name: "f32" unless the name says otherwise. fp16 names fp16 *weights* (TFLite's fp16
# recipe, OpenVINO's compressed IR): every runtime here decompresses them and computes
# in f32, and edgeflow pins that on every CPU, x86 and ARM alike, so an fp16 variant's
# numbers do not depend on the board's fp16 arithmetic. Quantised precisions run their
# quantised ops in integers and whatever stays float in f32. bf16 is its own variant.
EXECUTION_PRECISIONS: dict[str, str] = {"bf16": "bf16"}


def execution_precision(precision: str) -> str:
    """What a variant of ``precision`` must run its float arithmetic in."""
    return EXECUTION_PRECISIONS.get(precision, "f32")


def float_spec(input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """The spec of an artifact that takes and returns float32 tensors."""
    return {"input": {"dtype": "float32", "shape": [1, *input_shape], "layout": "NHWC",
                      "quantization": None},
            "output": {"dtype": "float32", "quantization": None}}
