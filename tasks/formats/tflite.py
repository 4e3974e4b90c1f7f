"""TensorFlow Lite / LiteRT: a flatbuffer converted from the SavedModel."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.formats import Exported, Format, SourceModel, float_spec


def export_tflite(source: SourceModel, precision: str, out_dir: Path,
                  calibration: np.ndarray) -> Exported:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(source.saved_model_dir))
    target = out_dir / "model.tflite"
    target.write_bytes(converter.convert())
    return Exported(target, (target,), float_spec(source.input_shape))


FORMAT = Format(name="tflite", suffix=".tflite", runtime="tflite", precisions=("fp32",),
                export=export_tflite)
