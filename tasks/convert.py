"""Step ``convert``: the trained model -> one artifact per (format, precision) variant,
each loaded back in its own runtime and checked against the Keras model.

Reads params ``formats`` and ``convert``, ``models/base/`` and ``data/prepared/``
(test images for the check, the calibration split for quantised precisions). Writes
``models/variants/<variant>/<files>`` and ``models/variants/index.json``: per variant
its format, precision, source model, files with bytes and sha256, runtime, input/output
spec (with quantisation parameters), and the check result (argmax agreement with
Keras, max abs logit difference, accuracy on the checked images).

A variant that disagrees with the model beyond the tolerances fails the whole step with
the numbers; nothing is written then, and earlier variants stay as they were.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks import harness
from tasks.config import ConvertParams
from tasks.errors import ConversionError, StepError
from tasks.files import atomic_output_dir, read_json, sha256_file, write_json
from tasks.formats import FORMATS, Exported, SourceModel
from tasks.prepare import load_split

FLOAT_PRECISIONS = {"fp32"}


@dataclass(frozen=True)
class CheckResult:
    samples: int
    agreement: float
    max_abs_logit_diff: float
    accuracy: float
    reference_accuracy: float
    passed: bool
    failures: tuple[str, ...]


def variant_name(source: str, fmt: str, precision: str) -> str:
    """``tflite-fp32`` for the base model, ``<source>-tflite-int8`` for others."""
    return f"{fmt}-{precision}" if source == "base" else f"{source}-{fmt}-{precision}"


def load_source(model_dir: Path, prepared: Path, name: str = "base") -> SourceModel:
    keras_path, saved_model = model_dir / "model.keras", model_dir / "saved_model"
    if not keras_path.is_file() or not saved_model.is_dir():
        raise StepError(f"{model_dir} holds no trained model: run the train step first")
    meta = read_json(prepared / "meta.json")
    return SourceModel(name, keras_path, saved_model, tuple(meta["input_shape"]))


def check_variant(exported: Exported, runtime: str, images: np.ndarray, labels: np.ndarray,
                  reference_logits: np.ndarray, precision: str,
                  params: ConvertParams) -> CheckResult:
    """Run the artifact in its runtime (the harness's own loader) and compare with Keras."""
    runner = harness.load_runner(runtime, str(exported.main_file), threads=1)
    logits = harness.predict(runner, images, exported.spec)
    predicted, expected = np.argmax(logits, axis=1), np.argmax(reference_logits, axis=1)
    agreement = float(np.mean(predicted == expected))
    max_diff = float(np.max(np.abs(logits - reference_logits)))
    failures = []
    if agreement < params.min_agreement:
        failures.append(f"argmax agreement {agreement:.4f} < {params.min_agreement}")
    # Quantised variants legitimately move logits; only float ones must match closely.
    if precision in FLOAT_PRECISIONS and max_diff > params.max_abs_logit_diff:
        failures.append(f"max |logit diff| {max_diff:.3g} > {params.max_abs_logit_diff}")
    return CheckResult(
        samples=int(len(images)), agreement=agreement, max_abs_logit_diff=max_diff,
        accuracy=float(np.mean(predicted == labels)),
        reference_accuracy=float(np.mean(expected == labels)),
        passed=not failures, failures=tuple(failures))


def _file_entries(exported: Exported, variants_dir: Path) -> list[dict[str, Any]]:
    return [{"path": path.relative_to(variants_dir).as_posix(), "bytes": path.stat().st_size,
             "sha256": sha256_file(path)} for path in exported.files]


def convert(formats: dict[str, list[str]], params: ConvertParams, model_dir: Path,
            prepared: Path, out_dir: Path) -> Path:
    """Export and check every variant; returns the path of ``index.json``."""
    import keras

    source = load_source(model_dir, prepared)
    x_test, y_test = load_split(prepared, "test")
    x_calib, _ = load_split(prepared, "calib")
    if params.check_samples:
        x_test, y_test = x_test[:params.check_samples], y_test[:params.check_samples]
    model = keras.models.load_model(source.keras_path, compile=False)
    reference_logits = np.asarray(model.predict(x_test, verbose=0), dtype=np.float32)

    variants: list[dict[str, Any]] = []
    disagreements: list[str] = []
    with atomic_output_dir(out_dir) as staging:
        for format_name, precisions in formats.items():
            fmt = FORMATS[format_name]
            for precision in precisions:
                name = variant_name(source.name, fmt.name, precision)
                target = staging / name
                target.mkdir()
                try:
                    exported = fmt.export(source, precision, target, x_calib)
                    check = check_variant(exported, fmt.runtime, x_test, y_test,
                                          reference_logits, precision, params)
                except Exception as error:  # noqa: BLE001 - reported with the variant name
                    raise ConversionError(f"convert: {name}: export failed: "
                                          f"{type(error).__name__}: {error}") from error
                if not check.passed:
                    disagreements.append(f"{name}: {'; '.join(check.failures)}")
                files = _file_entries(exported, staging)
                variants.append({
                    "name": name, "format": fmt.name, "precision": precision,
                    "source": source.name, "runtime": fmt.runtime,
                    "file": exported.main_file.relative_to(staging).as_posix(),
                    "files": files, "bytes": sum(entry["bytes"] for entry in files),
                    "sha256": files[0]["sha256"], "spec": exported.spec,
                    "check": asdict(check),
                })
        if disagreements:
            raise ConversionError("convert: artifacts disagree with the Keras model: "
                                  + " | ".join(disagreements))
        write_json(staging / "index.json", {
            "sources": {source.name: {"keras": source.keras_path.name,
                                      "input_shape": list(source.input_shape)}},
            "variants": variants,
        })
    return out_dir / "index.json"


def read_index(variants_dir: Path) -> list[dict[str, Any]]:
    """The variants listed in ``index.json`` (raises StepError when it is missing)."""
    path = variants_dir / "index.json"
    if not path.is_file():
        raise StepError(f"{path} is missing: run the convert step first")
    return list(read_json(path)["variants"])
