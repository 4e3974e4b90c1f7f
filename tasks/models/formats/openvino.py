"""OpenVINO IR (``model.xml`` + ``model.bin``) converted from the SavedModel:

- ``fp32``: as converted (``save_model`` would compress to fp16 unless told not to);
- ``fp16``: weights compressed to fp16 (``compress_to_fp16``), computed in f32;
- ``bf16``: the fp32 IR, computed in bf16 (``INFERENCE_PRECISION_HINT``) on devices that
  do so natively (CPUs with AVX512-BF16 or AMX); skipped with the reason elsewhere;
- ``int8``: NNCF post-training quantisation (``nncf.quantize``) on the calibration split:
  i8 weights; the float constants left over (biases, scales) stay f32, as
  ``compress_to_fp16`` leaves a quantised model's .bin unchanged (OpenVINO 2026.4, tested);
- ``int8-acc``: NNCF accuracy-aware quantisation
  (``nncf.quantize_with_accuracy_control``): layers that cost accuracy are reverted to
  float until the relative drop on the validation split is within the requirements'
  ``max_accuracy_drop``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.models.formats.base import Exported, ExportRequest, Format


def _calibration_dataset(request: ExportRequest) -> Any:
    import numpy as np
    import nncf

    samples = request.calibration[:request.quantization.calibration_samples]
    return nncf.Dataset(list(samples), lambda image: image[np.newaxis].astype(np.float32))


def _preset(request: ExportRequest) -> Any:
    import nncf

    return {"performance": nncf.QuantizationPreset.PERFORMANCE,
            "mixed": nncf.QuantizationPreset.MIXED}[request.quantization.openvino_preset]


def _as_is(model: Any, request: ExportRequest) -> Any:
    return model


def _int8(model: Any, request: ExportRequest) -> Any:
    import nncf

    return nncf.quantize(model, _calibration_dataset(request), preset=_preset(request),
                         subset_size=len(request.calibration[:request.quantization.calibration_samples]))


def _int8_accuracy_aware(model: Any, request: ExportRequest) -> Any:
    import numpy as np
    import nncf

    if request.validation is None:
        raise ValueError("accuracy-aware quantisation needs the validation split")
    images, labels = request.validation
    validation = nncf.Dataset(list(zip(images, labels)),
                              lambda item: item[0][np.newaxis].astype(np.float32))

    def accuracy(compiled: Any, items: Any) -> float:
        # NNCF passes the raw (image, label) items, possibly a subset of them.
        output = compiled.output(0)
        hits = [int(np.argmax(compiled(image[np.newaxis].astype(np.float32))[output]) == label)
                for image, label in items]
        return float(np.mean(hits)) if hits else 0.0

    return nncf.quantize_with_accuracy_control(
        model, calibration_dataset=_calibration_dataset(request),
        validation_dataset=validation, validation_fn=accuracy,
        max_drop=request.max_accuracy_drop, drop_type=nncf.DropType.RELATIVE,
        preset=_preset(request),
        subset_size=len(request.calibration[:request.quantization.calibration_samples]))


TRANSFORMS: dict[str, Callable[[Any, ExportRequest], Any]] = {
    "fp32": _as_is, "fp16": _as_is, "bf16": _as_is, "int8": _int8,
    "int8-acc": _int8_accuracy_aware,
}
# Saved with fp32 constants: fp32 must stay fp32, and bf16 rounds from fp32 once at
# compile time (from fp16 it would round twice).
FP32_STORAGE = {"fp32", "bf16"}


def converted_model(request: ExportRequest) -> Any:
    """The fp32 ov.Model of the source at batch 1, converted once per source (the
    conversion from a SavedModel costs seconds; reading the IR back, milliseconds)."""
    import openvino as ov

    cached = request.scratch / "openvino-fp32" / "model.xml" if request.scratch else None
    if cached is not None and cached.is_file():
        return ov.Core().read_model(str(cached))
    source = request.source
    path = Path(source.onnx_path or source.require_saved_model())
    model = ov.convert_model(str(path))
    # convert_model records the absolute source path in the IR's rt_info; its name alone
    # keeps a variant's bytes (and so its sha256, DVC's cache, the release manifest) the
    # same wherever the project is cloned.
    model.set_rt_info(path.name, ["conversion_parameters", "input_model"])
    model.reshape([1, *source.input_shape])
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, str(cached), compress_to_fp16=False)
    return model


def decline_telemetry_unless_chosen() -> None:
    """Record OpenVINO's documented telemetry opt-out (what ``opt_in_out --opt_out``
    writes: ``0`` in ``~/intel/openvino_telemetry``) unless the user has chosen already.

    Without that file NNCF and the model converter send usage events to Google Analytics
    from forked sender processes. edgeflow runs must not need the network: where DNS hangs
    instead of failing, ``edgeflow step convert`` never exited (it waited on the sender).
    OpenVINO reads no environment switch for this outside CI (``CI=true``)."""
    from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

    checker = OptInChecker()
    if checker.consent_file_base_dir() is None:
        return
    if not Path(checker.consent_file()).exists():
        checker.update_result(ConsentCheckResult.DECLINED)


def export_openvino(request: ExportRequest) -> Exported:
    import openvino as ov

    decline_telemetry_unless_chosen()
    model = TRANSFORMS[request.precision](converted_model(request), request)
    target = request.out_dir / "model.xml"
    # Every other precision asks for fp16 storage, as OpenVINO does by default: fp16's
    # weights become f16; NNCF's quantised models keep their float constants in f32.
    ov.save_model(model, str(target), compress_to_fp16=request.precision not in FP32_STORAGE)
    return Exported(target, (target, target.with_suffix(".bin")),
                    request.source.float_spec())


FORMAT = Format(name="openvino", suffix=".xml", runtime="openvino", precisions=tuple(TRANSFORMS),
                export=export_openvino)
