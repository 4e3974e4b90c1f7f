"""Step ``optimize``: the trained model -> pruned source models, each shaped like the base.

Reads params ``optimize`` (``optimize.pruning``: a list of recipes, each with a unique
``name`` and a ``method``: ``magnitude`` or ``structured``), a detector's
``data.detection`` (the decoding its pruned references are scored under), ``models/base/model.keras``
and ``models/base/reference.json`` (the base test accuracy), and the train/val/test
splits of ``data/prepared/``. For every recipe, in order, it prunes and fine-tunes the
base model (seeded, so the same inputs give the same models) and writes

- ``models/pruned/<name>/model.keras``, ``models/pruned/<name>/saved_model/`` and
  ``models/pruned/<name>/reference.json`` (``test_correct``: per test image, in order,
  like the train step), so the converters read a pruned source like the base;
- ``models/pruned/index.json``: ``{"sources": [...]}``, per recipe its ``name``,
  ``method``, ``options`` and ``before``/``after`` pairs of test accuracy, parameters,
  MACs per image, kernel sparsity, ``.keras`` bytes and gzipped ``.keras`` bytes (sparse
  weights only shrink once compressed), plus the recipe's ``details``.

"Accuracy" is the score of the data's kind of task (``meta.json``'s ``task``): a
classifier's accuracy, a detector's mAP@0.5 (its ``reference.json`` then names the task
and holds each image's matches, as the train step writes them). A recipe fine-tunes
the model as the train step trains that kind (:data:`tasks.models.pruning.FINE_TUNING`:
a detector on its grid loss, judged per epoch by val mAP@0.5).

A recipe that cannot prune the model (a structured recipe on a model you brought) is
listed under ``skipped`` with the reason; so is every recipe for a task no recipe
fine-tunes. With no recipe the folder still holds an index, with an empty ``sources``
list, so the next steps and DVC always find it. The whole folder is replaced only when every recipe
succeeded: a failure keeps the previous outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core import device_code, notices
from tasks.config import DetectionDecoding, OptimizeParams, decoding_spec
from tasks.core.accuracy import reference_on_first
from tasks.core.contracts.prepared import DEFAULT_TASK, load_split, read_meta
from tasks.core.errors import StepError
from tasks.core.files import atomic_output_dir, read_json, write_json
from tasks.models.stats import count_macs, count_params, gzip_size, kernel_sparsity
from tasks.models.pruning import FINE_TUNING, STRUCTURED_ARCHITECTURES, TrainingData, recipe
from tasks.models.seeding import seed_training


@dataclass(frozen=True)
class ModelFigures:
    """The figures compared before/after for one model (see :mod:`tasks.models.stats`)."""

    accuracy: float
    parameters: int
    macs: int
    kernel_sparsity: float
    keras_bytes: int
    keras_gzip_bytes: int


def _figures(model: Any, accuracy: float, keras_file: Path) -> ModelFigures:
    return ModelFigures(accuracy=accuracy, parameters=count_params(model),
                        macs=count_macs(model), kernel_sparsity=kernel_sparsity(model),
                        keras_bytes=keras_file.stat().st_size,
                        keras_gzip_bytes=gzip_size(keras_file))


def test_results(kind: Any, outputs: np.ndarray, labels: np.ndarray,
                 spec: dict[str, Any] | None = None) -> list[Any]:
    """Each test image's result as ``kind`` scores the model's ``outputs``, in order, as
    ``reference.json`` records it (what the train step writes): 1 or 0 per image for a
    classifier, a detector's per-image matches in their JSON form, decoded as ``spec``
    says (a detector's: ``data.detection``, as train's reference and every variant)."""
    results = kind.per_sample([kind.decode(row, spec) for row in outputs], labels)
    return [result.as_json() if hasattr(result, "as_json") else int(result)
            for result in results]


def _compare(before: ModelFigures, after: ModelFigures) -> dict[str, dict[str, float | int]]:
    return {field: {"before": getattr(before, field), "after": getattr(after, field)}
            for field in ModelFigures.__dataclass_fields__}


def _unprunable(model_dir: Path, task: str = DEFAULT_TASK) -> str | None:
    """Why the model in ``model_dir`` cannot be pruned here (a model you brought that is
    not a plain Keras one, a model of a task no recipe fine-tunes), or None."""
    if task not in FINE_TUNING:
        return (f"pruning recipes fine-tune {' and '.join(FINE_TUNING)} models; data.task "
                f"is {task} (not pruned yet)")
    described = model_dir / "source.json"
    if not described.is_file():
        return None
    source = read_json(described)
    if source["kind"] != "keras" and not (model_dir / "model.keras").is_file():
        return f"pruning needs a Keras model; the source is {source['kind']} ({source['file']})"
    if source["input"].get("normalize"):
        return ("pruning fine-tunes on [0, 1] pixels; this model was trained on normalised "
                "ones (model.mean/std)")
    return None


def _recipe_unfit(options: Any, model_dir: Path) -> str | None:
    """Why one recipe cannot prune the model in ``model_dir`` (a model you brought, which
    no structured recipe knows the channels of), or None."""
    described = model_dir / "source.json"
    if options.method == "structured" and described.is_file():
        return (f"structured pruning supports {', '.join(STRUCTURED_ARCHITECTURES)}; the source "
                f"is a model you brought ({read_json(described)['file']}): use method "
                "'magnitude'")
    return None


def optimize(params: OptimizeParams, model_dir: Path, prepared: Path, out_dir: Path, *,
             seed: int = 42, decoding: DetectionDecoding | None = None) -> Path:
    """Run every pruning recipe on ``model_dir``'s model, a pruned detector's reference
    scored under ``decoding`` (``data.detection``); returns ``out_dir``."""
    import keras

    base_file = model_dir / "model.keras"
    reference_file = model_dir / "reference.json"
    task = read_meta(prepared).task
    unprunable = _unprunable(model_dir, task)
    if unprunable:
        # Nothing to prune: every recipe is named with the reason, none fails the run.
        with atomic_output_dir(out_dir) as staging:
            write_json(staging / "index.json", {"sources": [], "skipped": [
                {"name": options.name, "reason": unprunable} for options in params.pruning]})
        if params.pruning:
            notices.warn(f"optimize: {len(params.pruning)} pruning recipe(s) skipped: "
                         f"{unprunable}")
        return out_dir
    for required in (base_file, reference_file):
        if not required.is_file():
            raise StepError(f"{required} is missing: run the train step first")
    base_correct = read_json(reference_file)["test_correct"]
    x_train, y_train = load_split(prepared, "train")
    x_val, y_val = load_split(prepared, "val")
    x_test, y_test = load_split(prepared, "test")
    if len(base_correct) != len(y_test):
        raise StepError(f"{reference_file} covers {len(base_correct)} test images but "
                        f"{prepared / 'test.npz'} has {len(y_test)}: re-run the train step")
    data = TrainingData(x_train, y_train, x_val, y_val, task)
    kind = device_code.task_kinds().get(task)
    # A detector's (data.detection's): the decoding train's reference and the variants use.
    spec = decoding_spec(decoding) if decoding is not None else None

    base_model = keras.models.load_model(base_file)
    base = _figures(base_model, reference_on_first(base_correct, 0, task), base_file)

    sources: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    counter = notices.Counter("optimize", len(params.pruning))
    with atomic_output_dir(out_dir) as staging:
        for options in params.pruning:
            unfit = _recipe_unfit(options, model_dir)
            if unfit:
                skipped.append({"name": options.name, "reason": unfit})
                notices.warn(f"optimize: {options.name} skipped: {unfit}")
                counter.advance(options.name, "skipped")
                continue
            # Seeded per recipe, not once: a recipe's result does not depend on which
            # recipes come before it in params.yaml.
            seed_training(seed)
            pruned = recipe(options.method)(options, base_model, data)
            test_correct = test_results(kind, pruned.model.predict(x_test, verbose=0), y_test,
                                        spec)

            target = staging / options.name
            target.mkdir()
            pruned.model.save(target / "model.keras")
            pruned.model.export(str(target / "saved_model"), format="tf_saved_model",
                                verbose=False)
            # A kind other than classification is named: its records are not 1s and 0s.
            write_json(target / "reference.json",
                       {**({"task": task} if task != DEFAULT_TASK else {}),
                        "test_correct": test_correct})
            after = _figures(pruned.model, reference_on_first(test_correct, 0, task),
                             target / "model.keras")
            sources.append({"name": options.name, "method": options.method,
                            "options": options.model_dump(mode="json"),
                            **_compare(base, after), "details": pruned.details})
            counter.advance(options.name, f"{options.method}, test {kind.metric_name} "
                                          f"{base.accuracy:.3f} -> {after.accuracy:.3f}")
        write_json(staging / "index.json",
                   {"sources": sources, **({"skipped": skipped} if skipped else {})})
    return out_dir
