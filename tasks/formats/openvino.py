"""OpenVINO IR (``model.xml`` + ``model.bin``) converted from the SavedModel."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.formats import Exported, Format, SourceModel, float_spec


def export_openvino(source: SourceModel, precision: str, out_dir: Path,
                    calibration: np.ndarray) -> Exported:
    import openvino as ov

    model = ov.convert_model(str(source.saved_model_dir))
    model.reshape([1, *source.input_shape])
    target = out_dir / "model.xml"
    # save_model compresses weights to fp16 unless told not to: fp32 must stay fp32.
    ov.save_model(model, str(target), compress_to_fp16=False)
    return Exported(target, (target, target.with_suffix(".bin")), float_spec(source.input_shape))


FORMAT = Format(name="openvino", suffix=".xml", runtime="openvino", precisions=("fp32",),
                export=export_openvino)
