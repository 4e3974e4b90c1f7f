"""Each produced variant as an MLflow LoggedModel, once per artifact.

Every variant is logged as the application's model: a pyfunc that takes raw images of
any size and answers each with its class, index, score and every class's score, or, a
detector, with its boxes in the image's pixels (:mod:`tasks.track.pyfunc_model`: the
release's pre-processing, then the artifact in its own runtime through the harness, then
the kind of task's decoding), with that signature and two test images (uint8) as its
input example; the artifact itself is among the model's files. Its
params say what it is (variant, format, precision, source, runtime) and its tag
``edgeflow.artifact_digest`` what exactly: the hash of its files, its spec, the harness
and this module's flavour version. A later track with the same digest reuses the model
(a re-benchmark logs no model again); the (variant, device) runs link to it as their
input model, and their metrics are logged against it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tasks.core import device_code
from tasks.core.contracts.prepared import load_split, read_meta
from tasks.core.contracts.variants import Variant, VariantIndex
from tasks.core.files import sha256_file

KIND_TAG, KIND = "edgeflow.kind", "variant"
DIGEST_TAG = "edgeflow.artifact_digest"
FLAVOUR_VERSION = "5"  # bump when what a logged model holds changes: models are re-logged
EXAMPLE_IMAGES = 2


@dataclass(frozen=True)
class ModelInputs:
    """What every variant's model is saved with: its signature, input example and what
    its pre-processing needs (``{"height", "width", "color", "fit"}`` and the class names)."""

    signature: Any
    example: Any
    input: dict[str, Any]
    classes: list[str]


@dataclass(frozen=True)
class LoggedModels:
    """Model id per variant name; ``created`` the variants logged by this call (the
    others were found already logged)."""

    ids: dict[str, str]
    created: tuple[str, ...]


def _class_outputs() -> Any:
    """A classifier's answer per image: class, index, score, scores."""
    from mlflow.types import DataType, Schema
    from mlflow.types.schema import Array, ColSpec

    return Schema([ColSpec(DataType.string, "class"), ColSpec(DataType.long, "index"),
                   ColSpec(DataType.double, "score"), ColSpec(Array(DataType.double), "scores")])


def _box_outputs() -> Any:
    """A detector's answer per image: ``detections``, a list of ``{"class", "index",
    "score", "box"}`` (``box`` ``[x0, y0, x1, y1]`` in the image's pixels)."""
    from mlflow.types import DataType, Schema
    from mlflow.types.schema import Array, ColSpec, Object, Property

    box = Object([Property("class", DataType.string), Property("index", DataType.long),
                  Property("score", DataType.double), Property("box", Array(DataType.double))])
    return Schema([ColSpec(Array(box), "detections")])


# The outputs of a model, by whether its kind of task locates (kinds/'s ``locates``: its
# answer is boxes, the predictor's ``{"detections": [...]}``).
OUTPUT_SCHEMAS: dict[bool, Callable[[], Any]] = {False: _class_outputs, True: _box_outputs}


def model_inputs(prepared: Path) -> ModelInputs:
    """Images in: uint8 (N, H, W, C) of any height, width and channels (1, 3 or 4), or
    images of different sizes as a ragged batch; named outputs out, as the data's kind of
    task answers (:data:`OUTPUT_SCHEMAS`: class, index, score, scores; a detector's
    detections). The first test images, as uint8, are the example."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    meta = read_meta(prepared)
    images, _ = load_split(prepared, "test")
    locates = bool(device_code.task_kinds().get(meta.task).locates)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1))]),
        outputs=OUTPUT_SCHEMAS[locates]())
    height, width, _ = meta.input_shape
    example = np.round(images[:EXAMPLE_IMAGES] * 255.0).astype(np.uint8)
    return ModelInputs(signature, example,
                       {"height": height, "width": width, "color": meta.color,
                        "fit": meta.fit},
                       list(meta.classes))


def artifact_digest(variant: Variant) -> str:
    """What identifies a logged variant: its files' hashes, its spec, the device code
    (the pyfunc runs it) and the flavour version."""
    document = {"name": variant.name, "runtime": variant.runtime, "spec": variant.spec,
                "files": [(entry.path, entry.sha256) for entry in variant.files or []],
                "device_code": {inside: sha256_file(path)
                                for path, inside in device_code.package_files()},
                "flavour": FLAVOUR_VERSION}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


@contextmanager
def _quietly() -> Iterator[None]:
    """MLflow draws a progress bar for each file it copies into a model and logs a line
    per validated input example (five lines per variant on the console): off while
    saving (the bars unless the user asked for them)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    chatty = logging.getLogger("mlflow.pyfunc")
    level, ours = chatty.level, name not in os.environ
    chatty.setLevel(logging.WARNING)
    if ours:
        os.environ[name] = "false"
    try:
        with warnings.catch_warnings():
            # The signature is given: hints on predict would only duplicate it.
            warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")
            yield
    finally:
        chatty.setLevel(level)
        if ours:
            os.environ.pop(name, None)


def _distribution(name: str) -> str:
    return f"{name}=={metadata.version(name)}"


# The runtime's distribution, pinned in the model's requirements (given, not inferred:
# MLflow's inference loads the model in a subprocess, seconds per variant).
HARNESS_DISTRIBUTIONS = {"onnxruntime": "onnxruntime", "tflite": "ai-edge-litert",
                         "edgetpu": "ai-edge-litert", "tflm": "tflite-micro",
                         "openvino": "openvino"}
# What the pyfunc itself needs besides MLflow: arrays, images, its output table.
PYFUNC_DISTRIBUTIONS = ("numpy", "pillow", "pandas")


def _save_harness_pyfunc(variant: Variant, variants_dir: Path, path: Path, mlflow_model: Any,
                         inputs: ModelInputs) -> None:
    import mlflow.pyfunc

    from tasks.track import pyfunc_model

    files = {f"file{number}": variants_dir / entry.path
             for number, entry in enumerate(variant.files or [])}
    main = next(key for key, file in files.items() if file == variants_dir / str(variant.file))
    spec = variant.spec or {}
    serving = path.with_name(f"{path.name}-serving.json")
    serving.write_text(json.dumps({
        "package": device_code.SHIPPED_PACKAGE, "runtime": variant.runtime, "artifact": main, "spec": spec,
        "options": {"arena_bytes": spec.get("arena_bytes"),
                    "execution_precision": spec.get("execution_precision")},
        "input": inputs.input, "classes": inputs.classes}), encoding="utf-8")
    requirements = [_distribution(name) for name in PYFUNC_DISTRIBUTIONS]
    if variant.runtime in HARNESS_DISTRIBUTIONS:
        requirements.append(_distribution(HARNESS_DISTRIBUTIONS[variant.runtime]))
    with tempfile.TemporaryDirectory(prefix="edgeflow-device-code-") as staging:
        device_code.ship(Path(staging), ())  # the package, as on a board
        mlflow.pyfunc.save_model(
            str(path), python_model=str(pyfunc_model.__file__), mlflow_model=mlflow_model,
            artifacts={"serving": str(serving),
                       **{key: str(file) for key, file in files.items()}},
            code_paths=[str(Path(staging) / device_code.SHIPPED_PACKAGE)],
            signature=inputs.signature, input_example=inputs.example,
            pip_requirements=requirements)


Saver = Callable[[Variant, Path, Path, Any, ModelInputs], None]
# Runtime -> (MLflow flavour, how to save a variant in it). A runtime missing here is
# logged as no model (its files stay in the variant index and DVC). ONNX too is the
# pyfunc: MLflow's onnx flavour would take normalised tensors and answer by the graph's
# output name ("Identity:0"), not images and classes.
FLAVOURS: dict[str, tuple[str, Saver]] = {
    runtime: ("python_function", _save_harness_pyfunc) for runtime in HARNESS_DISTRIBUTIONS}


def existing_models(client: Any, experiment_id: str) -> dict[str, str]:
    """Digest -> model id of the READY variant models already in the experiment."""
    from mlflow.entities import LoggedModelStatus

    found: dict[str, str] = {}
    token = None
    while True:
        page = client.search_logged_models([experiment_id], max_results=100, page_token=token,
                                           filter_string=f"tags.`{KIND_TAG}` = '{KIND}'")
        for model in page:
            if model.status == LoggedModelStatus.READY and DIGEST_TAG in model.tags:
                found.setdefault(model.tags[DIGEST_TAG], model.model_id)
        token = page.token
        if not token:
            return found


def log_variant_models(client: Any, experiment_id: str, run_id: str, index: VariantIndex,
                       variants_dir: Path, prepared: Path,
                       names: set[str] | None = None) -> LoggedModels:
    """Log each runnable variant of ``index`` (those in ``names`` when given) not
    logged before as a model produced by run ``run_id``; returns every variant's model
    id. A variant whose runtime has no flavour gets none."""
    known = existing_models(client, experiment_id)
    inputs: ModelInputs | None = None
    ids: dict[str, str] = {}
    created = []
    for variant in index.variants:
        if not variant.runnable or variant.runtime not in FLAVOURS or (
                names is not None and variant.name not in names):
            continue
        digest = artifact_digest(variant)
        if digest in known:
            ids[variant.name] = known[digest]
            continue
        inputs = inputs or model_inputs(prepared)
        ids[variant.name] = known[digest] = _log_model(client, experiment_id, run_id, variant,
                                                       variants_dir, inputs, digest)
        created.append(variant.name)
    return LoggedModels(ids, tuple(created))


def _log_model(client: Any, experiment_id: str, run_id: str, variant: Variant,
               variants_dir: Path, inputs: ModelInputs, digest: str) -> str:
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    flavour, save = FLAVOURS[variant.runtime]
    model = client.create_logged_model(
        experiment_id, name=variant.name, source_run_id=run_id, model_type=flavour,
        params={"variant": variant.name, "format": variant.format,
                "precision": variant.precision, "source": variant.source,
                "runtime": variant.runtime, "bytes": str(variant.bytes)},
        tags={KIND_TAG: KIND, DIGEST_TAG: digest, "edgeflow.sha256": str(variant.sha256)})
    try:
        with tempfile.TemporaryDirectory(prefix="edgeflow-model-") as scratch, _quietly():
            path = Path(scratch) / "model"
            save(variant, variants_dir, path,
                 Model(artifact_path=model.artifact_location, model_uuid=model.model_id,
                       run_id=run_id, model_id=model.model_id), inputs)
            client.log_model_artifacts(model.model_id, str(path))
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    except BaseException:
        client.finalize_logged_model(model.model_id, "FAILED")
        raise
    client.finalize_logged_model(model.model_id, "READY")
    return model.model_id
