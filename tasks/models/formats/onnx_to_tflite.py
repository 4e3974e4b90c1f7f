"""An ONNX model (one you brought: a PyTorch export, NCHW) -> a TFLite flatbuffer, with
onnx2tf in its own pinned environment (:mod:`tasks.models.tool_envs`, lock
``tools/onnx2tf.txt``), run as a subprocess with files in and out.

onnx2tf writes the flatbuffer directly (its ``flatbuffer_direct`` backend, no
TensorFlow) and turns an NCHW graph into NHWC, the layout TFLite's kernels and TFLite
Micro take: the model it writes always reads NHWC (an NHWC ONNX model keeps its input
shape: ``-kat``). Precisions (:data:`RECIPES`):

- ``fp32``: the float graph;
- ``dynamic``: int8 weights per tensor, float activations (``-odrqt``);
- ``int8``: full-integer, calibrated on the calibration split as the model reads it
  (normalised, in NHWC, given to onnx2tf with mean 0 and std 1), int8 input and output
  (``-oiqt -iqd int8 -oqd int8``), weights per channel unless ``quantization.per_channel``
  is false; ``calibration_samples`` images, as for TensorFlow's converter.

``fp16`` is not offered: onnx2tf's float16 model takes, returns and computes float16,
where edgeflow's fp16 is fp16 weights computed in f32 on every device.

onnx2tf also writes models edgeflow does not ask for beside the one it does (an int16-
activation one with ``-oiqt``), and exits non-zero when one of those fails its own
validation: the wanted file, where written, is used (the convert step checks it against
the source like every variant) and the failure is kept in the details.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.models.formats.base import ExportRequest, Skipped
from tasks.models.tool_envs import ToolLock, ToolUnavailable, environment, last_lines

if TYPE_CHECKING:  # numpy is imported where it is used: every command reads this module
    import numpy as np

CODE_DATA = ("tools",)
LOCK_PATH = Path(__file__).with_name("tools") / "onnx2tf.txt"
TOOL = "onnx2tf"
CONVERT_SECONDS = 1800
CALIBRATION_FILE = "calibration.npy"


@dataclass(frozen=True)
class Recipe:
    """onnx2tf's flags for a precision and the suffix of the file it writes for it."""

    flags: tuple[str, ...]
    suffix: str
    calibrated: bool = False


RECIPES: dict[str, Recipe] = {
    "fp32": Recipe((), "float32"),
    # Per-tensor: LiteRT's CONV_2D refuses onnx2tf 2.6's per-channel dynamic-range
    # weights ("quantized_dimension != 0 (3 != 0)", seen here on a PyTorch CNN).
    "dynamic": Recipe(("-odrqt", "-qt", "per-tensor"), "dynamic_range_quant"),
    "int8": Recipe(("-oiqt", "-iqd", "int8", "-oqd", "int8"), "full_integer_quant", True),
}
NOT_OFFERED: dict[str, str] = {
    "fp16": "onnx2tf's float16 model takes, returns and computes float16; edgeflow's fp16 "
            "is fp16 weights computed in f32",
}
# Precisions not offered for a detector of a declared output layout (the source's
# ``output``), and why: measured on an Ultralytics YOLOv8n-style export (onnx2tf 2.x).
NOT_OFFERED_FOR_LAYOUT: dict[tuple[str, str], str] = {
    ("yolo", "int8"): "onnx2tf's full-integer YOLO does not run: LiteRT's XNNPACK cannot "
                      "prepare its int8 graph, and its reference kernels refuse its int8 "
                      "sigmoid (output scale not 1/256); and its one int8 output holds pixel "
                      "boxes and 0-1 class scores on one scale (a step of about 2 pixels: "
                      "every score rounds to 0 or one step)",
}


def onnx_input_name(onnx_path: Path) -> str:
    """The graph's one input that is not an initializer (what ``-cind``/``-kat`` name)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initialisers = {initialiser.name for initialiser in graph.initializer}
    inputs = [value.name for value in graph.input if value.name not in initialisers]
    if len(inputs) != 1:
        raise ValueError(f"{onnx_path.name} has {len(inputs)} inputs ({', '.join(inputs)}); "
                         f"one image input is supported")
    return inputs[0]


def nhwc(batch: np.ndarray, layout: str) -> np.ndarray:
    """Images arranged as the source reads them, back in NHWC (the TFLite model's layout)."""
    import numpy as np

    return np.ascontiguousarray(np.transpose(batch, (0, 2, 3, 1)) if layout == "NCHW" else batch)


def onnx2tf_arguments(onnx_path: Path, out: Path, recipe: Recipe, input_name: str, layout: str,
                      calibration: Path | None, per_channel: bool = True) -> list[str]:
    """The command line for one precision: batch fixed at 1, the NHWC input kept as it
    is, calibration data named with mean 0 and std 1 (it is normalised already), the
    calibrated weights per channel (onnx2tf's default) unless ``per_channel`` is False."""
    arguments = ["-i", str(onnx_path), "-o", str(out), "-b", "1", *recipe.flags]
    if recipe.calibrated and not per_channel:
        arguments += ["-qt", "per-tensor"]
    if layout != "NCHW":
        arguments += ["-kat", input_name]
    if calibration is not None:
        arguments += ["-cind", input_name, str(calibration), "[[[[0.0]]]]", "[[[[1.0]]]]"]
    return arguments


def onnx_tflite_bytes(request: ExportRequest, precision: str, work: Path) -> tuple[bytes,
                                                                                   dict[str, Any]]:
    """The flatbuffer of the request's ONNX source at ``precision`` and what onnx2tf said
    (version, Python, any failure of a companion model); :class:`Skipped` where the
    precision is not offered or onnx2tf's environment cannot be had here."""
    import numpy as np

    source = request.source
    assert source.onnx_path is not None, source.name
    if precision in NOT_OFFERED:
        raise Skipped(f"from ONNX: {NOT_OFFERED[precision]}")
    output_layout = (source.output or {}).get("format")
    if (output_layout, precision) in NOT_OFFERED_FOR_LAYOUT:
        raise Skipped(f"from ONNX: {NOT_OFFERED_FOR_LAYOUT[output_layout, precision]}")
    recipe = RECIPES[precision]
    try:
        tool = environment(ToolLock.read(TOOL, LOCK_PATH))
    except ToolUnavailable as unavailable:
        raise Skipped(f"ONNX -> TFLite needs onnx2tf's environment: {unavailable}") from None
    layout = (source.input or {}).get("layout", "NHWC")
    # onnx2tf rewrites the file it is given (it names unnamed ops in place): a copy, so
    # the source model, train's output, stays as train wrote it.
    onnx_path = work / source.onnx_path.name
    shutil.copyfile(source.onnx_path, onnx_path)
    name = onnx_input_name(onnx_path)
    out = work / f"onnx2tf-{precision}"
    calibration = None
    if recipe.calibrated:
        calibration = work / CALIBRATION_FILE
        samples = request.calibration[:request.quantization.calibration_samples]
        np.save(calibration, nhwc(np.asarray(samples, np.float32), layout))
    done = tool.run(onnx2tf_arguments(onnx_path, out, recipe, name, layout, calibration,
                                      request.quantization.per_channel),
                    cwd=work, timeout=CONVERT_SECONDS)
    written = out / f"{onnx_path.stem}_{recipe.suffix}.tflite"
    if not written.is_file():
        raise RuntimeError(f"onnx2tf wrote no {written.name} (exit {done.returncode}): "
                           f"{last_lines(done.stdout)}")
    details: dict[str, Any] = {"converter": f"{TOOL} {_version(tool.folder)}",
                               "converter_python": tool.python_version}
    if done.returncode != 0:
        details["converter_note"] = (f"onnx2tf exited {done.returncode} after writing "
                                     f"{written.name}: {last_lines(done.stdout, 1)}")
    return written.read_bytes(), details


def _version(folder: Path) -> str:
    """onnx2tf's installed version, from its dist-info (no interpreter start)."""
    found = sorted(folder.glob("lib/python*/site-packages/onnx2tf-*.dist-info"))
    return found[0].name.removeprefix("onnx2tf-").removesuffix(".dist-info") if found else "?"
