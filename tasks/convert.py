"""Step ``convert``: the trained model -> one artifact per (format, precision) variant,
each loaded back in its own runtime and checked against the Keras model.

Reads params ``formats``, ``convert`` and, for a detector, ``data.detection`` (the
decoding written into every variant's spec, the one train scored the reference with),
``models/base/`` and ``data/prepared/``
(test images for the check, the calibration split for quantised precisions). Writes
``models/variants/<variant>/<files>`` and ``models/variants/index.json``
(:mod:`tasks.core.contracts.variants`): per variant its format, precision, source model,
files with bytes and sha256, runtime, input/output spec (with quantisation parameters),
and the check result (argmax agreement with Keras, max abs logit difference, accuracy on
the checked images).

Each variant's spec names its execution precision (``f32``, or ``bf16`` for a bf16
variant): the precision its float arithmetic must run in on every device, which the
check here and the harness on each device request explicitly.

An fp32/fp16 variant that disagrees with its model beyond the tolerances is a converter
fault: it fails the whole step with the numbers; nothing is written then, and earlier
variants stay as they were. A quantised or bf16 variant below ``min_agreement_quantized``
is kept in the index as ``rejected`` with its numbers (quantisation and bf16 arithmetic
may cost accuracy) and is not benchmarked; an exporter that cannot run here marks its
variant ``skipped``; one whose export or check raises is ``failed`` with the error (its
own row, as in benchmark; the other variants are kept). A bf16 variant on a CPU without
native bf16 is checked in f32 (the same graph) and says so; each device then measures its
bf16 accuracy or skips it.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core import notices
from tasks.core.accuracy import (accuracy_interval, own_interval, reference_on_first,
                                  relative_drop)
from tasks.config import ConvertParams, DetectionDecoding, QuantizationParams, decoding_spec
from tasks.core.contracts.prepared import DEFAULT_TASK, load_split, read_meta
from tasks.core.contracts.variants import (INDEX_NAME, Variant, VariantCheck, VariantFile,
                                           VariantIndex, VariantSource, write_variant_index)
from tasks.core import device_code
from tasks.core.device_code import VariantSpec
from tasks.core.errors import ConversionError, StepError, folded
from tasks.core.files import atomic_output_dir, read_json, sha256_file
from tasks.models.formats import (FORMATS, Exported, ExportRequest, Format, Skipped, SourceModel,
                                  execution_precision)
from tasks.models.stats import gzip_size

# Float precisions must agree with Keras like fp32 does (argmax); only fp32 is held to
# the logit tolerance: fp16 weights move logits slightly by design.
FLOAT_PRECISIONS = {"fp32", "fp16"}
EXACT_PRECISIONS = {"fp32"}
# A failed variant's reason: the exception's text, enough to act on, never a whole log.
REASON_LIMIT = 600


def variant_name(source: str, fmt: str, precision: str) -> str:
    """``tflite-fp32`` for the base model, ``<source>-tflite-int8`` for others."""
    return f"{fmt}-{precision}" if source == "base" else f"{source}-{fmt}-{precision}"


def load_source(model_dir: Path, prepared: Path, name: str = "base") -> SourceModel:
    """The model in ``model_dir``: edgeflow's (``model.keras`` + ``saved_model/``), or a
    model you brought as train wrote it (``source.json`` says its kind and input)."""
    keras_path, saved_model = model_dir / "model.keras", model_dir / "saved_model"
    onnx_path, described = model_dir / "model.onnx", model_dir / "source.json"
    if described.is_file():
        source = read_json(described)
        spec = source["input"]
        shape = tuple(int(size) for size in spec["shape"][1:])
        return SourceModel(name, keras_path if keras_path.is_file() else None,
                           saved_model if saved_model.is_dir() else None, shape,  # type: ignore[arg-type]
                           onnx_path if onnx_path.is_file() else None, spec, source.get("output"))
    if not keras_path.is_file() or not saved_model.is_dir():
        raise StepError(f"{model_dir} holds no trained model: run the train step first")
    return SourceModel(name, keras_path, saved_model, tuple(read_meta(prepared).input_shape))


def source_logits(source: SourceModel, images: np.ndarray) -> np.ndarray:
    """The source model's own logits for ``images`` (in [0, 1], NHWC), arranged as it
    reads them: Keras (or the SavedModel) for a TensorFlow model, ONNX Runtime in f32 for
    an ONNX one: what each of its variants is checked against."""
    runtimes, tensors = device_code.load("runtimes"), device_code.load("tensors")
    spec = source.float_spec()
    if source.keras_path is None and source.onnx_path is not None:
        runner = runtimes.load_runner("onnxruntime", str(source.onnx_path), 1,
                                     {"execution_precision": "f32",
                                      "input_shape": spec["input"]["shape"]})
        return tensors.predict(runner, images, spec)
    import keras

    from tasks.models.model_file import load_keras

    model = (keras.models.load_model(source.keras_path, compile=False) if source.keras_path
             else load_keras(source.saved_model_dir))  # type: ignore[arg-type]
    return np.asarray(model.predict(tensors.arrange_batch(images, spec["input"]), verbose=0),
                      dtype=np.float32)


def _check_runner(exported: Exported, runtime: str) -> tuple[Any, str | None]:
    """The artifact loaded as a device would load it, at its spec's execution precision.
    Where this machine lacks that precision natively (bf16 on a CPU without it), the
    same graph is checked in f32 instead, and the note says so."""
    runtimes = device_code.load("runtimes")
    load = functools.partial(runtimes.load_runner, exported.check_runtime or runtime,
                             str(exported.check_file or exported.main_file), 1)
    wanted = exported.spec.get("execution_precision", runtimes.DEFAULT_EXECUTION_PRECISION)
    # The recorded arena too (TFLite Micro): the check runs in exactly what a device gets.
    given = {"input_shape": exported.spec["input"].get("shape"),
             "arena_bytes": exported.spec.get("arena_bytes")}
    try:
        return load({**given, "execution_precision": wanted}), None
    except runtimes.PrecisionUnavailable as unavailable:
        return (load({**given, "execution_precision": "f32"}),
                f"checked in f32 here ({unavailable}); devices measure its {wanted} accuracy")


def check_variant(exported: Exported, runtime: str, images: np.ndarray, labels: np.ndarray,
                  reference_logits: np.ndarray, precision: str,
                  params: ConvertParams) -> VariantCheck:
    """Run the artifact in its runtime (the harness's own loader) and compare with Keras."""
    runner, note = _check_runner(exported, runtime)
    kind = device_code.task_kinds().of_spec(exported.spec)
    logits = device_code.load("tensors").predict(runner, images, exported.spec)
    # The source answers in the variant's layout (the same model, float): one spec decodes both.
    predicted = [kind.decode(row, exported.spec) for row in logits]
    expected = [kind.decode(row, exported.spec) for row in reference_logits]
    agreement = kind.agreement(predicted, expected)
    max_diff = float(np.max(np.abs(logits - reference_logits)))
    failures = []
    wanted = "f32" if note else exported.spec.get("execution_precision", "f32")
    if runner.execution_precision != wanted:
        failures.append(f"ran in {runner.execution_precision}, not the {wanted} it declares")
    floor = params.min_agreement if precision in FLOAT_PRECISIONS else params.min_agreement_quantized
    if agreement < floor:
        failures.append(f"{kind.decoding} agreement {agreement:.4f} < {floor}")
    # Quantised variants legitimately move logits; only float ones must match closely.
    if precision in EXACT_PRECISIONS and max_diff > params.max_abs_logit_diff:
        failures.append(f"max |logit diff| {max_diff:.3g} > {params.max_abs_logit_diff}")
    per_sample = kind.per_sample(predicted, labels)
    # Beside the score, the kind's own interval where it is not the binomial one (a
    # detector's bootstrap over images): what a microcontroller's row of this host run shows.
    interval = own_interval(kind, per_sample)
    return VariantCheck(
        samples=int(len(images)), agreement=agreement, max_abs_logit_diff=max_diff,
        accuracy=kind.metric(per_sample),
        reference_accuracy=kind.metric(kind.per_sample(expected, labels)),
        passed=not failures, failures=failures,
        execution_precision=runner.execution_precision, note=note,
        **({"accuracy_interval": interval} if interval is not None else {}))


def with_execution_precision(exported: Exported, precision: str) -> Exported:
    """The export with its spec naming the precision its float arithmetic must run in."""
    spec: VariantSpec = {**exported.spec,  # type: ignore[typeddict-item]
                         "execution_precision": execution_precision(precision)}
    return replace(exported, spec=spec)


def with_source_input(exported: Exported, source: SourceModel) -> Exported:
    """The export with the source's normalisation in its input spec (a model you brought
    trained on other pixel values), so every runtime and the harness feed alike."""
    normalize = (source.input or {}).get("normalize")
    spec: VariantSpec = {**exported.spec,  # type: ignore[typeddict-item]
                         "input": {**exported.spec["input"], "normalize": normalize}}
    return replace(exported, spec=spec)


def _file_entries(exported: Exported, variants_dir: Path) -> list[VariantFile]:
    return [VariantFile(path=path.relative_to(variants_dir).as_posix(),
                        bytes=path.stat().st_size, sha256=sha256_file(path))
            for path in exported.files]


@dataclass(frozen=True)
class ConvertInputs:
    """The files the step reads: the base model, the pruned models (optional) and the
    prepared data."""

    model_dir: Path
    pruned_dir: Path | None
    prepared: Path


def list_sources(inputs: ConvertInputs) -> list[SourceModel]:
    """The base model, then every model the optimize step wrote (``index.json`` order)."""
    sources = [load_source(inputs.model_dir, inputs.prepared)]
    index = inputs.pruned_dir / "index.json" if inputs.pruned_dir else None
    if index is not None and index.is_file():
        for entry in read_json(index)["sources"]:
            sources.append(load_source(inputs.pruned_dir / entry["name"], inputs.prepared,
                                       entry["name"]))
    return sources


def _reference_accuracy(model_dir: Path, samples: int, task: str) -> float:
    """The source model's score on the first ``samples`` test images (0 = all), from the
    per-sample results train recorded, as the kind of task scores them."""
    return reference_on_first(read_json(model_dir / "reference.json")["test_correct"], samples,
                              task)


def with_task(exported: Exported, task: str, entries: dict[str, Any] | None = None) -> Exported:
    """The export with its spec naming its kind of task and what that kind decodes by
    (``entries``: :func:`task_entries`); classification stays unnamed (a spec without
    one is classification, as every spec before kinds was)."""
    if task == DEFAULT_TASK:
        return exported
    return replace(exported, spec={**exported.spec, "task": task, **(entries or {})})


def _grid_layout(shape: tuple[int, ...], classes: int) -> dict[str, Any]:
    """edgeflow's grid head, ``(S, S, 5 + C)`` per image: its size."""
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 5 + classes:
        raise ConversionError(f"convert: the detector answers {shape}, not a square grid of "
                              f"5 + {classes} values per cell (objectness, box, one score "
                              f"per class)")
    return {"format": "grid", "classes": classes, "grid": int(shape[0])}


def _yolo_layout(shape: tuple[int, ...], classes: int) -> dict[str, Any]:
    """An Ultralytics YOLO export, ``(4 + C, N)`` per image (flattened as ONNX Runtime's
    outputs reach convert: a whole number of boxes of 4 + C values)."""
    rows = shape[0] if len(shape) == 2 else 4 + classes
    if len(shape) not in (1, 2) or rows != 4 + classes or not shape[-1] \
            or int(np.prod(shape)) % rows:
        raise ConversionError(f"convert: the YOLO detector answers {shape}, not 4 + {classes} "
                              "values (box, one score per class) for each of its boxes")
    return {"format": "yolo", "classes": classes}


# A detector's output layouts (the detection kind's LAYOUTS) by the source's declared
# format: how convert reads the sizes the spec records from the source's own output.
DETECTION_LAYOUTS: dict[str, Callable[[tuple[int, ...], int], dict[str, Any]]] = {
    "grid": _grid_layout, "yolo": _yolo_layout}


def _detection_entries(reference: np.ndarray, classes: int, decoding: DetectionDecoding | None,
                       output_format: str = "grid") -> dict[str, Any]:
    """A detector's ``"detection"`` spec entry: its output layout (``output_format``, the
    source's: edgeflow's grid, or the YOLO a model you bring declares) with the sizes read
    from the source model's own output (``(N, S, S, 5 + C)`` or ``(N, 4 + C, boxes)``),
    the classes, and the decoding (``data.detection``, the one train scored the reference
    with; None: its defaults): every runtime's output arrives flattened, so the spec says
    how to read it."""
    layout = DETECTION_LAYOUTS[output_format](tuple(reference.shape[1:]), classes)
    return {"detection": {**layout, **decoding_spec(decoding)["detection"]}}


# What a variant's spec carries beyond "task", per kind of task that needs more.
TASK_ENTRIES: dict[str, Callable[..., dict[str, Any]]] = {
    "detection": _detection_entries,
}


def task_entries(task: str, reference: np.ndarray, classes: int,
                 decoding: DetectionDecoding | None = None,
                 output: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec entries of ``task`` (:data:`TASK_ENTRIES`; none for classification);
    ``output``: the source's declared output (:class:`SourceModel`'s), where it has one."""
    entries = TASK_ENTRIES.get(task)
    if not entries:
        return {}
    return entries(reference, classes, decoding, **({"output_format": output["format"]}
                                                    if output else {}))


@dataclass(frozen=True)
class CheckData:
    """What every variant is exported with and checked against: the test images (the
    first ``check_samples``) with the base model's accuracy on them, the calibration and
    validation splits, and the limits."""

    x_test: np.ndarray
    y_test: np.ndarray
    x_calib: np.ndarray
    validation: tuple[np.ndarray, np.ndarray]
    base_accuracy: float
    params: ConvertParams
    quantization: QuantizationParams
    max_accuracy_drop: float
    task: str = DEFAULT_TASK
    classes: int = 0
    decoding: DetectionDecoding | None = None
    # The spec entries of the task (task_entries), per source model.
    entries: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, inputs: ConvertInputs, params: ConvertParams,
             quantization: QuantizationParams, max_accuracy_drop: float | None,
             decoding: DetectionDecoding | None = None) -> CheckData:
        x_test, y_test = load_split(inputs.prepared, "test")
        if params.check_samples:
            x_test, y_test = x_test[:params.check_samples], y_test[:params.check_samples]
        meta = read_meta(inputs.prepared)
        return cls(x_test, y_test, load_split(inputs.prepared, "calib")[0],
                   load_split(inputs.prepared, "val"),
                   _reference_accuracy(inputs.model_dir, len(y_test), meta.task), params,
                   quantization, max_accuracy_drop or 0.01, meta.task, len(meta.classes),
                   decoding)


def convert(formats: dict[str, list[str]], params: ConvertParams,
            quantization: QuantizationParams, max_accuracy_drop: float | None,
            inputs: ConvertInputs, out_dir: Path,
            decoding: DetectionDecoding | None = None) -> Path:
    """Export and check every (source, format, precision), a detector's spec decoding by
    ``decoding`` (``data.detection``); returns ``index.json``'s path."""
    data = CheckData.load(inputs, params, quantization, max_accuracy_drop, decoding)
    sources = list_sources(inputs)
    counter = notices.Counter("convert", len(sources) * sum(map(len, formats.values())))
    with atomic_output_dir(out_dir) as staging, tempfile.TemporaryDirectory() as scratch:
        variants = [variant for source in sources
                    for variant in _convert_source(source, formats, data, staging, Path(scratch),
                                                   counter)]
        _refuse_disagreements(variants)
        write_variant_index(staging, VariantIndex(
            reference_accuracy=data.base_accuracy,
            sources={source.name: VariantSource(
                keras=_model_path(source), input_shape=list(source.input_shape))
                for source in sources},
            variants=variants))
    return out_dir / INDEX_NAME


def _model_path(source: SourceModel) -> str:
    """The source's model file relative to models/."""
    path = source.keras_path or source.onnx_path or source.saved_model_dir
    assert path is not None, source.name
    return path.relative_to(path.parents[1]).as_posix()


def _convert_source(source: SourceModel, formats: dict[str, list[str]], data: CheckData,
                    staging: Path, scratch_root: Path, counter: notices.Counter) -> list[Variant]:
    """Every (format, precision) variant of one source model, in params order, each
    counted as done once exported and checked."""
    scratch = scratch_root / source.name
    scratch.mkdir()
    reference_logits = source_logits(source, data.x_test)
    # The exporters calibrate and validate on images as the model reads them.
    arrange = functools.partial(device_code.load("tensors").arrange_batch, spec=source.float_spec()["input"])
    data = replace(data, x_calib=arrange(data.x_calib),
                   validation=(arrange(data.validation[0]), data.validation[1]),
                   entries=task_entries(data.task, reference_logits, data.classes,
                                        data.decoding, source.output))
    # Compared with each variant's outputs, which every runtime gives flattened.
    reference_logits = reference_logits.reshape(len(reference_logits), -1)
    variants = []
    for format_name, precisions in formats.items():
        for precision in precisions:
            variant = _convert_variant(source, FORMATS[format_name], precision,
                                       reference_logits, data, staging, scratch)
            counter.advance(variant.name, variant.status)
            variants.append(variant)
    return variants


def _convert_variant(source: SourceModel, fmt: Format, precision: str,
                     reference_logits: np.ndarray, data: CheckData, staging: Path,
                     scratch: Path) -> Variant:
    """Export one variant into ``staging/<name>`` and check it: its index entry."""
    name = variant_name(source.name, fmt.name, precision)
    target = staging / name
    target.mkdir()
    identity = {"name": name, "format": fmt.name, "precision": precision,
                "source": source.name, "runtime": fmt.runtime}
    request = ExportRequest(source, precision, target, data.x_calib, data.quantization,
                            data.validation, data.max_accuracy_drop, scratch)
    started = time.perf_counter()
    try:
        exported = with_task(with_source_input(
            with_execution_precision(fmt.export(request), precision), source), data.task,
            data.entries)
        check = check_variant(exported, fmt.runtime, data.x_test, data.y_test, reference_logits,
                              precision, data.params)
    except Skipped as skip:
        shutil.rmtree(target)
        return Variant(**identity, status="skipped", reason=str(skip))
    except Exception as error:  # noqa: BLE001 - the variant's own row, with the error
        # One exporter that cannot handle the model (an opset-7 ONNX file in ONNX
        # Runtime's quantiser) must not cost the variants that converted.
        shutil.rmtree(target, ignore_errors=True)
        reason = folded(f"export failed: {type(error).__name__}: {error}", REASON_LIMIT)
        notices.warn(f"convert: {name}: {reason}")
        return Variant(**identity, status="failed", reason=reason,
                       export_and_check_seconds=round(time.perf_counter() - started, 2))
    rejected = not check.passed and precision not in FLOAT_PRECISIONS
    # Quantisation may legitimately cost accuracy: the variant stays in the index and the
    # report, rejected with its numbers, unbenchmarked.
    return Variant(**identity, status="rejected" if rejected else "ok",
                   reason="; ".join(check.failures) if rejected else None,
                   **_produced(exported, check, staging, data.base_accuracy),
                   export_and_check_seconds=round(time.perf_counter() - started, 2))


def _refuse_disagreements(variants: list[Variant]) -> None:
    """A float variant that disagrees with its model is a converter fault: the step
    fails with the numbers of each, and writes nothing."""
    disagreements = [f"{variant.name}: {'; '.join(variant.check.failures)}"
                     for variant in variants if variant.precision in FLOAT_PRECISIONS
                     and variant.check is not None and not variant.check.passed]
    if disagreements:
        raise ConversionError("convert: artifacts disagree with their Keras model: "
                              + " | ".join(disagreements))


def _produced(exported: Exported, check: VariantCheck, variants_dir: Path,
              base_accuracy: float) -> dict[str, Any]:
    """The index fields of a variant that was exported and checked."""
    files = _file_entries(exported, variants_dir)
    return {
        "file": exported.main_file.relative_to(variants_dir).as_posix(),
        "files": files, "bytes": sum(entry.bytes for entry in files),
        "gzip_bytes": sum(gzip_size(variants_dir / entry.path) for entry in files),
        "extras": [path.relative_to(variants_dir).as_posix() for path in exported.extras],
        "sha256": files[0].sha256, "spec": exported.spec,
        "accuracy": check.accuracy,
        "accuracy_interval": (check.accuracy_interval
                              or list(accuracy_interval(check.accuracy, check.samples))),
        "accuracy_drop": relative_drop(check.accuracy, base_accuracy),
        "details": exported.details,
        "check": check,
    }
