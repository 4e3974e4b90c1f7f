"""The experiment schema (:mod:`tasks.config.params`), field by field, closed as classes
(issue 27): every numeric field's bounds are accepted AT the bound and refused just past
it with the exact message; every choice field accepts each of its members and names
them all when refused; every default is the documented one. The tables below are
literal (not read from the code), and each is checked to cover every field of its kind
the schema has, so a new field joins them or fails here."""

from __future__ import annotations

import math
from pathlib import Path
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

import pydantic
import pytest

import tasks.config.params as schema
from tasks.config.params import (BenchmarkParams, CompareParams, ConvertParams, DataParams,
                                 DetectionDecoding,
                                 EndToEndParams, OptimizeParams, Params, ReleaseParams,
                                 Requirements, SelectParams, SplitParams, TrainParams)

# Each model of this module and where it sits in params.yaml.
WHERE: dict[type[pydantic.BaseModel], tuple[str, ...]] = {
    DataParams: ("data",), SplitParams: ("data", "split"), TrainParams: ("train",),
    ConvertParams: ("convert",), DetectionDecoding: ("data", "detection"),
    BenchmarkParams: ("benchmark",),
    EndToEndParams: ("benchmark", "end_to_end"), Requirements: ("requirements",),
    ReleaseParams: ("release",), SelectParams: ("select",), CompareParams: ("compare",),
    OptimizeParams: ("optimize",)}


@dataclass(frozen=True)
class Bound:
    """A field's range: ``low``/``high`` (None: unbounded), each inclusive or not;
    ``style`` is "count"/"number" (tasks.core.strict's message) or "pydantic" (Field's
    gt/ge/lt/le message); ``unit`` as the message names it."""

    style: str
    low: float
    low_in: bool
    high: float | None
    high_in: bool = True
    unit: str = ""


def count(low: int, high: int) -> Bound:
    return Bound("count", low, True, high)


def seconds(positive: bool = False) -> Bound:
    return Bound("number", 0, not positive, 86_400, unit="seconds")


def field(low: float, low_in: bool, high: float | None, high_in: bool = True) -> Bound:
    return Bound("pydantic", low, low_in, high, high_in)


SEED = count(0, 4_294_967_295)
SAMPLES = count(0, 1_000_000)
MEGABYTES = Bound("number", 0, False, 1_048_576, unit="MB")
MILLISECONDS = Bound("number", 0, False, 86_400_000, unit="ms")

# (section path, field) -> its bound; a tuple field (image_size, frame_size) per side.
BOUNDS: dict[tuple[tuple[str, ...], str], Bound] = {
    (("data", "split"), "val"): field(0, False, 0.5, False),
    (("data", "split"), "test"): field(0, False, 0.5, False),
    (("data",), "calibration_size"): count(1, 1_000_000),
    (("data",), "scenes"): count(1, 1_000_000),
    (("data",), "seed"): SEED,
    (("train",), "epochs"): count(1, 1000),
    (("train",), "batch_size"): count(1, 4096),
    (("train",), "learning_rate"): field(0, False, 1),
    (("train",), "label_smoothing"): field(0, True, 1, False),
    (("train",), "seed"): SEED,
    (("train",), "early_stopping_patience"): count(1, 1000),
    (("convert",), "check_samples"): SAMPLES,
    (("convert",), "min_agreement"): field(0, False, 1),
    (("convert",), "min_agreement_quantized"): field(0, False, 1),
    (("convert",), "max_abs_logit_diff"): field(0, False, None),
    (("data", "detection"), "score_threshold"): Bound("number", 0, False, 1),
    (("data", "detection"), "iou_threshold"): Bound("number", 0, False, 1),
    (("data", "detection"), "max_detections"): count(1, 10_000),
    (("benchmark", "end_to_end"), "frame_size"): count(8, 8192),
    (("benchmark", "end_to_end"), "quality"): count(1, 100),
    (("benchmark", "end_to_end"), "frames"): count(1, 10_000),
    (("benchmark",), "warmup_runs"): count(0, 1_000_000),
    (("benchmark",), "warmup_seconds"): seconds(),
    (("benchmark",), "runs"): count(1, 100_000),
    (("benchmark",), "seconds"): seconds(),
    (("benchmark",), "max_seconds"): seconds(),
    (("benchmark",), "interval_width"): Bound("number", 0, False, 1),
    (("benchmark",), "accuracy_samples"): SAMPLES,
    (("benchmark",), "timeout_seconds"): seconds(positive=True),
    (("benchmark",), "lock_timeout_seconds"): seconds(),
    (("requirements",), "min_accuracy"): field(0, True, 1),
    (("requirements",), "max_accuracy_drop"): field(0, True, 1),
    (("requirements",), "min_map50"): field(0, True, 1),
    (("requirements",), "max_map_drop"): field(0, True, 1),
    (("requirements",), "max_latency_p90_ms"): MILLISECONDS,
    (("requirements",), "max_end_to_end_p90_ms"): MILLISECONDS,
    (("requirements",), "min_fps"): Bound("number", 0, False, 1_000_000, unit="fps"),
    (("requirements",), "max_size_mb"): MEGABYTES,
    (("requirements",), "max_peak_rss_mb"): MEGABYTES,
    (("requirements",), "max_energy_mj"): Bound("number", 0, False, 1e9, unit="mJ"),
    (("requirements",), "min_battery_hours"): Bound("number", 0, False, 1e7, unit="hours"),
    (("release",), "keep"): count(2, 100),
    (("release",), "check_images"): count(1, 10_000),
    (("release",), "check_timeout_seconds"): seconds(positive=True),
    (("release",), "approval_timeout_seconds"): seconds(positive=True),
    (("compare",), "latency_increase"): Bound("number", 0, True, 100),
    (("compare",), "accuracy_drop"): Bound("number", 0, True, 1),
    (("compare",), "size_increase"): Bound("number", 0, True, 100),
}
# image_size has a validator of its own (both sides, one message).
IMAGE_SIDES = (8, 1024)

# (section path, field) -> its choices, in the order the message lists them.
CHOICES: dict[tuple[tuple[str, ...], str], tuple[str, ...]] = {
    (("data",), "source"): ("digits", "digit_scenes", "folder"),
    (("data",), "color"): ("grayscale", "rgb"),
    (("data",), "fit"): ("squash", "letterbox", "letterbox_grey"),
    (("data",), "labels"): ("yolo", "coco"),
    (("train",), "lr_schedule"): ("constant", "cosine", "plateau"),
    (("train",), "class_weight"): ("none", "balanced"),
    (("benchmark", "end_to_end"), "encoding"): ("jpeg", "png"),
    (("requirements",), "rank_by"): ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
                                     "throughput_fps", "size_bytes", "accuracy",
                                     "peak_rss_mb", "energy_mj"),
    (("release",), "policy"): ("auto", "approve", "off"),
    (("release",), "readable_by"): ("owner", "group", "everyone"),
}


def _kind(annotation: Any) -> str | None:
    """"number" for an int or float field (optional or not), "tuple" for a tuple of
    them, "choice" for a Literal (or a list of one), else None."""
    origin = typing.get_origin(annotation)
    if annotation in (int, float):
        return "number"
    if origin is typing.Annotated:
        return _kind(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        kinds = {_kind(arg) for arg in typing.get_args(annotation) if arg is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if origin is tuple:
        return "tuple" if all(_kind(arg) == "number" for arg in typing.get_args(annotation)) \
            else None
    if origin is Literal:
        return "choice"
    if origin is list:
        return "choice" if _kind(typing.get_args(annotation)[0]) == "choice" else None
    return None


def _fields(kind: str) -> set[tuple[tuple[str, ...], str]]:
    return {(where, name) for model, where in WHERE.items()
            for name, info in model.model_fields.items() if _kind(info.annotation) == kind}


def test_the_tables_cover_every_field_of_the_schema() -> None:
    assert {model for model in vars(schema).values()
            if isinstance(model, type) and issubclass(model, pydantic.BaseModel)
            and model.__module__ == "tasks.config.params" and model is not Params} == set(WHERE)
    assert _fields("number") | _fields("tuple") == set(BOUNDS) | {(("data",), "image_size")}
    assert _fields("choice") == set(CHOICES)


# Keys read only beside others: what else a value of theirs needs set to be accepted.
CONTEXT: dict[tuple[tuple[str, ...], str], Any] = {
    (("data",), "scenes"): lambda value: {"task": "detection", "source": "digit_scenes"},
    (("data",), "labels"): lambda value: {
        "task": "detection", "source": "folder", "folder": "images",
        **({"coco_json": "labels.json"} if value == "coco" else {})},
}


# Keys that need another section set: a detector's requirements need a detection task.
DETECTION_DATA = {"data": {"task": "detection", "source": "digit_scenes"}}
OTHER_SECTIONS: dict[tuple[tuple[str, ...], str], dict[str, Any]] = {
    (("requirements",), "min_map50"): DETECTION_DATA,
    (("requirements",), "max_map_drop"): DETECTION_DATA,
    **{(("data", "detection"), name): DETECTION_DATA
       for name in ("score_threshold", "iou_threshold", "max_detections")},
}


def _merged(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """``first`` with ``second``'s keys, sections merged key by key."""
    merged = dict(first)
    for key, value in second.items():
        merged[key] = (_merged(merged[key], value)
                       if isinstance(value, dict) and isinstance(merged.get(key), dict) else value)
    return merged


def _params(where: tuple[str, ...], name: str, value: Any) -> dict[str, Any]:
    """The params mapping that sets ``where.name`` to ``value`` (a side of a size), with
    what it needs beside it (:data:`CONTEXT`)."""
    if name == "frame_size":
        value = [value, 640]
    document: dict[str, Any] = {name: value}
    if (where, name) in CONTEXT:
        document.update(CONTEXT[where, name](value))
    for key in reversed(where):
        document = {key: document}
    return _merged(OTHER_SECTIONS.get((where, name), {}), document)


def _value(params: Params, where: tuple[str, ...], name: str) -> Any:
    section: Any = params
    for key in where:
        section = getattr(section, key)
    value = getattr(section, name)
    return value[0] if name == "frame_size" else value


def _refusal(where: tuple[str, ...], name: str, value: Any) -> tuple[tuple[Any, ...], str]:
    with pytest.raises(pydantic.ValidationError) as caught:
        Params.model_validate(_params(where, name, value))
    first = caught.value.errors()[0]
    return first["loc"], first["msg"].removeprefix("Value error, ")


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def _message(bound: Bound, side: str, value: Any) -> str:
    if bound.style == "pydantic":
        limit = bound.low if side == "low" else bound.high
        relation = {("low", True): "greater than or equal to", ("low", False): "greater than",
                    ("high", True): "less than or equal to",
                    ("high", False): "less than"}[side, bound.low_in if side == "low"
                                                   else bound.high_in]
        return f"Input should be {relation} {_show(limit)}"
    kind = "an integer" if bound.style == "count" else "a number"
    lowest = f"above {_show(bound.low)} and at most" if not bound.low_in else \
        f"from {_show(bound.low)} to"
    unit = f" ({bound.unit})" if bound.unit else ""
    return f"must be {kind} {lowest} {_show(bound.high)}{unit}, got {value!r}"


def _edges(bound: Bound, side: str) -> tuple[float, float]:
    """(the value nearest the bound that is allowed, the nearest that is not)."""
    limit = bound.low if side == "low" else bound.high
    outward = -math.inf if side == "low" else math.inf
    inclusive = bound.low_in if side == "low" else bound.high_in
    if bound.style == "count":
        step = -1 if side == "low" else 1
        return int(limit), int(limit) + step
    inside = limit if inclusive else math.nextafter(limit, -outward)
    outside = math.nextafter(limit, outward) if inclusive else limit
    return inside, outside


SIDES = [pytest.param(key, side, id=f"{'.'.join(key[0])}.{key[1]}-{side}")
         for key, bound in BOUNDS.items() for side in ("low", "high")
         if side == "low" or bound.high is not None]


@pytest.mark.parametrize("key, side", SIDES)
def test_every_bound_is_allowed_at_itself_and_refused_just_past_it(
        key: tuple[tuple[str, ...], str], side: str) -> None:
    where, name = key
    bound = BOUNDS[key]
    inside, outside = _edges(bound, side)
    assert _value(Params.model_validate(_params(where, name, inside)), where, name) == inside
    loc, message = _refusal(where, name, outside)
    assert loc == (*where, name, *((0,) if name == "frame_size" else ()))
    assert message == _message(bound, side, outside)


@pytest.mark.parametrize("side", [0, 1])
def test_image_size_sides_are_bounded_each_at_8_and_1024(side: int) -> None:
    for allowed in IMAGE_SIDES:
        size = [16, 16]
        size[side] = allowed
        assert Params.model_validate({"data": {"image_size": size}}).data.image_size == \
            tuple(size)
    for refused in (IMAGE_SIDES[0] - 1, IMAGE_SIDES[1] + 1):
        size = [16, 16]
        size[side] = refused
        assert _refusal(("data",), "image_size", size) == (
            ("data", "image_size"), "image_size sides must be between 8 and 1024 pixels")


@pytest.mark.parametrize("key", list(CHOICES), ids=lambda key: f"{'.'.join(key[0])}.{key[1]}")
def test_every_choice_is_accepted_and_a_refusal_names_them_all(
        key: tuple[tuple[str, ...], str]) -> None:
    where, name = key
    choices = CHOICES[key]
    listed = choices if name != "rank_by" else [[choice] for choice in choices]
    extra = {"folder": "images"} if name == "source" else {}
    for choice, value in zip(choices, listed):
        document = _params(where, name, value)
        if extra and choice == "folder":
            document["data"].update(extra)
        got = _value(Params.model_validate(document), where, name)
        assert got == (value if name != "rank_by" else [choice])
    quoted = [repr(choice) for choice in choices]
    loc, message = _refusal(where, name, "nonesuch" if name != "rank_by" else ["nonesuch"])
    assert loc == (*where, name, *((0,) if name == "rank_by" else ()))
    assert message == f"Input should be {', '.join(quoted[:-1])} or {quoted[-1]}"


def test_every_default_is_the_documented_one() -> None:
    dumped = Params().model_dump(mode="json")
    assert {key: dumped[key] for key in ("data", "train", "convert", "benchmark",
                                         "requirements", "select", "release", "compare",
                                         "optimize", "formats")} == {
        "data": {"source": "digits", "folder": None, "labels": None, "coco_json": None,
                 "scenes": None, "image_size": [32, 32],
                 "color": "grayscale", "fit": "squash", "split": {"val": 0.15, "test": 0.2},
                 "calibration_size": 200, "seed": 42, "task": "classification",
                 "detection": None},
        "train": {"fine_tune": None, "epochs": 40, "batch_size": 32, "learning_rate": 0.001,
                  "lr_schedule": "constant", "label_smoothing": 0.0, "class_weight": "none",
                  "augmentation": {"flip": "none", "shift": 0.0, "rotation_degrees": 0.0,
                                   "brightness": 0.0, "contrast": 0.0},
                  "seed": 42, "early_stopping_patience": 8},
        "convert": {"check_samples": 0, "min_agreement": 0.99, "min_agreement_quantized": 0.95,
                    "max_abs_logit_diff": 0.001},
        "benchmark": {"warmup_runs": 20, "warmup_seconds": 0.5, "runs": 200, "seconds": 2.0,
                      "max_seconds": 10.0, "interval_width": 0.05, "accuracy_samples": 0,
                      "timeout_seconds": 600.0, "lock_timeout_seconds": 600.0,
                      "end_to_end": None,
                      "firmware": {"sources_sha256": None}},
        "requirements": {"min_accuracy": None, "max_accuracy_drop": 0.01,
                         "min_map50": None, "max_map_drop": None,
                         "max_latency_p90_ms": None, "max_end_to_end_p90_ms": None,
                         "min_fps": None, "max_size_mb": None, "max_peak_rss_mb": None,
                         "max_energy_mj": None, "min_battery_hours": None,
                         "rank_by": ["latency_p50_ms"]},
        "select": {"include_emulated": False},
        "release": {"policy": "auto", "keep": 5, "check_images": 50,
                    "check_timeout_seconds": 300.0, "approval_timeout_seconds": 3600.0,
                    "readable_by": "group"},
        "compare": {"latency_increase": 0.1, "accuracy_drop": 0.01, "size_increase": 0.05,
                    "include_emulated": False},
        "optimize": {"pruning": []},
        "formats": {"tflite": ["fp32"], "onnx": ["fp32"], "openvino": ["fp32"]}}
    assert EndToEndParams().model_dump(mode="json") == {
        "frame_size": [480, 640], "encoding": "jpeg", "quality": 90, "frames": 100}
    assert Params.model_validate({"model": {}}).model.architecture == "small_cnn"
    assert Params.model_validate(
        {"model": {"source": "file", "path": "m.onnx"}}).model.architecture == "file"


# ----------------------------------------------------------------- the cross-field rules


@pytest.mark.parametrize("order, message", [
    ([], "an empty preference order (name at least one measure)"),
    (["accuracy", "size_bytes", "accuracy"], "accuracy named twice in the preference order"),
    (["size_bytes", "accuracy", "size_bytes", "accuracy"],
     "accuracy, size_bytes named twice in the preference order"),
])
def test_a_preference_order_is_not_empty_and_names_each_measure_once(
        order: list[str], message: str) -> None:
    assert _refusal(("requirements",), "rank_by", order) == (("requirements", "rank_by"),
                                                              message)


def test_a_preference_order_keeps_its_order() -> None:
    order = ["accuracy", "latency_p90_ms", "size_bytes"]
    assert Params.model_validate({"requirements": {"rank_by": order}}).requirements.rank_by \
        == order
    assert Requirements(rank_by="accuracy").rank_by == ["accuracy"]


@pytest.mark.parametrize("color, name, values, message", [
    ("grayscale", "mean", [0.5, 0.5, 0.5],
     "model.mean has 3 values; data.color grayscale images have 1 channel"),
    ("rgb", "std", [0.5], "model.std has 1 values; data.color rgb images have 3 channels"),
    ("rgb", "mean", [0.5, 0.5], "model.mean has 2 values; data.color rgb images have 3 channels"),
])
def test_a_brought_models_normalisation_has_one_value_per_channel(
        color: str, name: str, values: list[float], message: str) -> None:
    document = {"data": {"color": color}, "model": {"source": "file", "path": "m.onnx",
                                                    name: values}}
    with pytest.raises(pydantic.ValidationError) as caught:
        Params.model_validate(document)
    assert caught.value.errors()[0]["msg"] == f"Value error, {message}"
    channels = 1 if color == "grayscale" else 3
    fits = {**document, "model": {**document["model"], name: [0.5] * channels}}
    assert getattr(Params.model_validate(fits).model, name) == [0.5] * channels


def test_a_brought_model_may_be_structurally_pruned_and_fine_tuned() -> None:
    params = Params.model_validate({
        "model": {"source": "file", "path": "m.onnx"}, "train": {"fine_tune": {"epochs": 3}},
        "optimize": {"pruning": [{"name": "slim", "method": "structured", "ratio": 0.5}]}})
    assert params.model.architecture == "file" and params.train.fine_tune is not None
    assert params.optimize.pruning[0].method == "structured"


@pytest.mark.parametrize("name, instead", [("min_map50", "min_accuracy"),
                                           ("max_map_drop", "max_accuracy_drop")])
def test_a_detectors_requirements_are_refused_for_another_task(name: str, instead: str) -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        Params.model_validate({"requirements": {name: 0.5}})
    assert (f"requirements.{name} applies to data.task: detection; for classification use "
            f"requirements.{instead}") in str(refused.value)
    detection = Params.model_validate({**DETECTION_DATA, "requirements": {name: 0.5}})
    assert getattr(detection.requirements, name) == 0.5


def test_a_map_drop_limit_replaces_the_default_accuracy_drop_unless_both_are_stated() -> None:
    params = Params.model_validate({**DETECTION_DATA, "requirements": {"max_map_drop": 0.1}})
    assert (params.requirements.max_map_drop, params.requirements.max_accuracy_drop) == (0.1, None)
    both = Params.model_validate({**DETECTION_DATA, "requirements": {
        "max_map_drop": 0.1, "max_accuracy_drop": 0.02}})
    assert (both.requirements.max_map_drop, both.requirements.max_accuracy_drop) == (0.1, 0.02)
    assert Params.model_validate(DETECTION_DATA).requirements.max_accuracy_drop == 0.01


# ------------------------------------------------------- a detector's decoding, one section
def test_the_decoding_is_data_detection_and_its_old_place_is_refused_naming_it() -> None:
    """train and convert read one section, data.detection; convert.detection (its place
    before) is refused with one line naming the new place, never taken silently."""
    with pytest.raises(pydantic.ValidationError) as refused:
        Params.model_validate({**DETECTION_DATA,
                               "convert": {"detection": {"score_threshold": 0.5}}})
    first = refused.value.errors()[0]
    assert first["loc"] == ("convert",)
    assert first["msg"].removeprefix("Value error, ") == (
        "convert.detection moved to data.detection (train's reference and every variant "
        "decode by it): move the section there")
    stated = Params.model_validate(_merged(DETECTION_DATA, {"data": {"detection": {
        "score_threshold": 0.5, "max_detections": 7}}}))
    assert stated.data.decoding == DetectionDecoding(score_threshold=0.5, iou_threshold=0.45,
                                                     max_detections=7)
    assert Params.model_validate(DETECTION_DATA).data.decoding == DetectionDecoding()
    assert Params().data.decoding is None  # a classifier has nothing to decode


def test_data_detection_is_refused_for_a_classifier() -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        Params.model_validate({"data": {"detection": {"score_threshold": 0.5}}})
    assert refused.value.errors()[0]["msg"].removeprefix("Value error, ") == (
        "data.detection is only used when data.task is 'detection'")


@pytest.mark.parametrize("experiment", sorted(
    path.parent.name for path in (Path(__file__).resolve().parents[3] / "experiments").glob(
        "*/params.yaml")))
def test_every_shipped_experiment_loads(experiment: str) -> None:
    """The examples in experiments/ follow the schema (a moved key, convert.detection,
    would refuse one)."""
    from tasks.config import load_params

    root = Path(__file__).resolve().parents[3] / "experiments" / experiment
    params = load_params(root / "params.yaml")
    assert (params.data.decoding is not None) == (params.data.task == "detection")
