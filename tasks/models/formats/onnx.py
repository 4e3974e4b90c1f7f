"""ONNX for ONNX Runtime, exported by Keras 3 itself (``tf2onnx.convert.from_keras``
fails on Keras 3 models; ``model.export(format="onnx")`` works; a SavedModel you bring is
exported through its serving signature wrapped as a Keras model, an ONNX model you bring
is used as it is), then quantised with ONNX Runtime's own tools:

- ``fp32``: the export as is;
- ``int8-dynamic``: ``quantize_dynamic`` (int8 weights, activations quantised at run
  time from their observed range);
- ``int8-qdq``: ``quant_pre_process`` (shape inference + graph optimisation, as ORT
  recommends), then ``quantize_static`` in QDQ format, per-channel weights, calibrated
  on the calibration split by MinMax, Entropy or Percentile (``quantization`` params),
  7-bit weights (``reduce_range``) unless ``onnx_reduce_range: false``.
  Inputs and outputs stay float: the QDQ nodes live inside the graph. Entropy is the
  KL-divergence threshold search of TensorRT (a 2048-bin histogram searched with 128
  quantised bins), run by ORT's own ``EntropyCalibrater`` and handed to ``quantize_static``
  as its calibration cache: ``quantize_static`` alone builds that calibrater at 128 bins,
  which leaves one candidate threshold, the whole range, i.e. MinMax.
  A detector you bring (its source declares its ``output``, e.g. YOLO's) keeps the node
  that writes its output in float (:func:`float_output_nodes`): a YOLO output
  concatenates box corners in input pixels and 0-1 class scores, which one 8-bit scale
  cannot hold (quantised whole, every score was 0 and mAP@0.5 0.0 on the digit scenes;
  with that one Concat in float, 0.578 as fp32's).
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.models.formats.base import Exported, ExportRequest, Format

if TYPE_CHECKING:  # numpy is imported where it is used: every command reads this module
    import numpy as np


def export_fp32_onnx(request: ExportRequest, target: Path) -> None:
    import numpy as np
    import keras

    source = request.source
    if source.onnx_path is not None:  # a model you bring: itself, at batch 1
        shutil.copyfile(source.onnx_path, target)
        return
    if source.keras_path is not None:
        model = keras.models.load_model(source.keras_path, compile=False)
    else:  # a SavedModel you bring: its serving signature, wrapped as a Keras model
        from tasks.models.model_file import load_keras

        model = load_keras(source.require_saved_model())
    # The ONNX exporter traces a model that has been called at least once.
    model(np.zeros((1, *request.source.input_shape), dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # tf2onnx's np.object probe
        model.export(str(target), format="onnx", verbose=False)


def _quantize_dynamic(request: ExportRequest, fp32: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(fp32, target, weight_type=QuantType.QInt8,
                     per_channel=request.quantization.per_channel,
                     reduce_range=request.quantization.onnx_reduce_range)


class _CalibrationReader:
    """Feeds the calibration split to ORT's calibrator, one batch-1 image at a time."""

    def __init__(self, input_name: str, images: np.ndarray) -> None:
        import numpy as np
        self._feeds = iter([{input_name: image[np.newaxis].astype(np.float32)} for image in images])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # pragma: no cover - ORT calls it for some methods only
        pass


# Entropy calibration's bins (TensorRT's: a fine 2048-bin histogram of each activation,
# symmetric about zero, whose KL-divergence threshold search tries every window of at
# least 128 bins, the 128 quantised bins of 8 bits). ORT's create_calibrator defaults both
# to 128 and quantize_static passes neither: one window, the whole range, MinMax's.
ENTROPY_HISTOGRAM_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128


def _entropy_calibration_cache(model: Path, reader: _CalibrationReader, cache: Path) -> Path:
    """Each activation's range by ORT's EntropyCalibrater at the bins above, saved where
    ``quantize_static(calibration_cache_path=...)`` reads ranges instead of calibrating.
    It calibrates the tensors quantize_static would: those of every op ORT quantises."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    calibrator = create_calibrator(
        model, sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
        augmented_model_path=str(cache.with_name("entropy-augmented.onnx")),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={"num_bins": ENTROPY_HISTOGRAM_BINS,
                       "num_quantized_bins": ENTROPY_QUANTIZED_BINS})
    calibrator.collect_data(reader)
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def float_output_nodes(model: object) -> list[str]:
    """The named nodes that write the graph's outputs: kept float by ``quantize_static``
    (``nodes_to_exclude``), so an output mixing ranges (a detector's pixel boxes and
    scores) is not forced onto one 8-bit scale."""
    graph = model.graph  # type: ignore[attr-defined]
    outputs = {value.name for value in graph.output}
    return [node.name for node in graph.node if node.name and outputs & set(node.output)]


def _quantize_qdq(request: ExportRequest, fp32: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    preprocessed = fp32.with_name("preprocessed.onnx")
    quant_pre_process(str(fp32), str(preprocessed))
    graph_model = onnx.load(str(preprocessed))
    input_name = graph_model.graph.input[0].name
    declared = getattr(request.source, "output", None)  # a detector you brought: its layout
    float_nodes = float_output_nodes(graph_model) if declared else []
    reader_class = type("CalibrationReader", (_CalibrationReader, CalibrationDataReader), {})
    samples = request.calibration[:request.quantization.calibration_samples]
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[request.quantization.onnx_calibration]
    reader = reader_class(input_name, samples)
    cache = None  # quantize_static calibrates, except entropy: see ENTROPY_HISTOGRAM_BINS
    if method == CalibrationMethod.Entropy:
        cache = _entropy_calibration_cache(preprocessed, reader,
                                           fp32.with_name("entropy-ranges.json"))
    quantize_static(preprocessed, target, None if cache else reader,
                    quant_format=QuantFormat.QDQ, per_channel=request.quantization.per_channel,
                    reduce_range=request.quantization.onnx_reduce_range,
                    # ORT's CPU guidance for x86: unsigned activations, signed weights.
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=method, calibration_cache_path=cache,
                    nodes_to_exclude=float_nodes)


QUANTIZERS: dict[str, Callable[[ExportRequest, Path, Path], None] | None] = {
    "fp32": None, "int8-dynamic": _quantize_dynamic, "int8-qdq": _quantize_qdq,
}


def export_onnx(request: ExportRequest) -> Exported:
    target = request.out_dir / "model.onnx"
    quantizer = QUANTIZERS[request.precision]
    with tempfile.TemporaryDirectory() as temporary:
        # The fp32 graph is exported once per source and shared by every precision.
        fp32 = (request.scratch or Path(temporary)) / "onnx-fp32" / "model.onnx"
        if not fp32.is_file():
            fp32.parent.mkdir(parents=True, exist_ok=True)
            export_fp32_onnx(request, fp32)
        if quantizer is None:
            shutil.copyfile(fp32, target)
        else:
            work = Path(temporary) / "model.onnx"
            shutil.copyfile(fp32, work)  # ORT's pre-processing writes beside its input
            quantizer(request, work, target)
    return Exported(target, (target,), request.source.float_spec())


FORMAT = Format(name="onnx", suffix=".onnx", runtime="onnxruntime", precisions=tuple(QUANTIZERS),
                export=export_onnx)
