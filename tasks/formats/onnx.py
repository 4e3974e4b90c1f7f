"""ONNX for ONNX Runtime, exported by Keras 3 itself (``tf2onnx.convert.from_keras``
fails on Keras 3 models; ``model.export(format="onnx")`` works)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.formats import Exported, Format, SourceModel, float_spec


def export_onnx(source: SourceModel, precision: str, out_dir: Path,
                calibration: np.ndarray) -> Exported:
    import keras

    model = keras.models.load_model(source.keras_path, compile=False)
    # The ONNX exporter traces a model that has been called at least once.
    model(np.zeros((1, *source.input_shape), dtype=np.float32))
    target = out_dir / "model.onnx"
    model.export(str(target), format="onnx", verbose=False)
    return Exported(target, (target,), float_spec(source.input_shape))


FORMAT = Format(name="onnx", suffix=".onnx", runtime="onnxruntime", precisions=("fp32",),
                export=export_onnx)
