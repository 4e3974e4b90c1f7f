"""The experiment schema: ``params.yaml``'s sections, each a frozen pydantic model a step
receives. Option models of code in :mod:`tasks.models` (architectures, a model file,
pruning, augmentation, quantisation) are defined beside that code and assembled here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from tasks.core.bounds import (MAX_SAMPLES, LatencyLimit, MegabyteLimit, PositiveSeconds,
                               Seconds, Seed)
from tasks.core import device_code
from tasks.core.contracts.prepared import DEFAULT_TASK
from tasks.core.strict import StrictModel, count, number
from tasks.config.firmware import FirmwareSettings
from tasks.models.architectures import MobileNetV2Options, SmallCNNOptions, TinyDetectorOptions
from tasks.models.augment import AugmentationParams
from tasks.models.formats import QuantizationParams, validate_format_matrix
from tasks.models.model_file import FineTuneOptions, ModelFileOptions, check_task
from tasks.models.pruning import (STRUCTURED_ARCHITECTURES, MagnitudePruningOptions,
                                  StructuredPruningOptions)

class SplitParams(StrictModel):
    val: float = Field(default=0.15, gt=0.0, lt=0.5)
    test: float = Field(default=0.2, gt=0.0, lt=0.5)


# The sources a detection task can read (``data.source``): scenes of several digits with
# their boxes, or a folder with label files. Any other kind labels one class per image,
# from every source. (prepare's registries of loaders are keyed by the same names.)
DETECTION_TASK = "detection"
DETECTION_SOURCES = ("digit_scenes", "folder")
LABEL_FORMATS = ("yolo", "coco")


class DetectionDecoding(StrictModel):
    """How a detector's output becomes boxes (``data.detection``, for ``data.task:
    detection``): one section read by train (the fp32 reference's mAP, reference.json and
    the epochs' val mAP) and by convert (written into each variant's spec, so the harness,
    the predictor and the host checks decode alike); recorded with every result. The
    reference and the variants are thereby scored under the same decoding."""

    score_threshold: Annotated[float, number(0.0, 1.0, above=True)] = Field(
        default=0.25, description="least score (objectness x class probability) kept")
    iou_threshold: Annotated[float, number(0.0, 1.0, above=True)] = Field(
        default=0.45, description="non-maximum suppression: a box overlapping a better one "
                                  "of its class by more is dropped")
    max_detections: Annotated[int, count(1, 10_000)] = Field(
        default=100, description="most boxes kept per image, best first")


def decoding_spec(decoding: DetectionDecoding | None) -> dict[str, Any]:
    """``decoding`` (None: the defaults) in a variant spec's form, ``{"detection": {...}}``,
    as the detection kind's ``settings`` reads it: how train and optimize score the
    Keras models' outputs under the decoding convert writes into every variant's spec."""
    return {"detection": (decoding or DetectionDecoding()).model_dump()}


class DataParams(StrictModel):
    """Where images come from and how they become model inputs."""

    source: Literal["digits", "digit_scenes", "folder"] = "digits"
    folder: Path | None = None
    labels: Literal["yolo", "coco"] | None = Field(
        default=None, description="for task detection with source folder: the label "
        "layout of the folder (yolo: images/ and labels/; coco: data.coco_json, the images "
        "in data.folder)")
    coco_json: Path | None = Field(default=None, description="the COCO JSON file, for "
                                   "labels coco")
    scenes: Annotated[int, count(1, MAX_SAMPLES)] | None = Field(
        default=None, description="for task detection with source digit_scenes: how many "
        "scenes (images of 1 to 5 digits) to draw; none: 600")
    image_size: tuple[int, int] = (32, 32)
    color: Literal["grayscale", "rgb"] = "grayscale"
    fit: Literal["squash", "letterbox", "letterbox_grey"] = Field(
        default="squash", description="an image of another aspect ratio is squashed to "
        "image_size, or letterboxed (scaled to fit, black borders; letterbox_grey: grey "
        "borders, 114, as Ultralytics YOLO pads); training and the released application do "
        "the same")
    split: SplitParams = SplitParams()
    calibration_size: Annotated[int, count(1, MAX_SAMPLES)] = 200
    seed: Seed = 42
    task: str = Field(default=DEFAULT_TASK, description="the kind of task: how the "
                      "model's outputs are checked, decoded and scored (a registered kind)")
    # Under data, beside the task it decodes for, rather than a section of its own: train
    # and convert both read it (and list `data` as their DVC params), and a top-level
    # section would be one more key every classification params.yaml must write for DVC
    # to track it. (It was convert.detection once, which train's reference never read.)
    detection: DetectionDecoding | None = Field(
        default=None, description="for task detection: how the model's output becomes "
        "boxes (score and IoU thresholds, most boxes), the same in train's reference and "
        "every variant; none: the defaults")

    @field_validator("image_size")
    @classmethod
    def _image_size_in_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not all(8 <= side <= 1024 for side in value):
            raise ValueError("image_size sides must be between 8 and 1024 pixels")
        return value

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        known = device_code.task_kinds().names()
        if value not in known:
            raise ValueError(f"unknown task kind {value!r}: one of {', '.join(known)}")
        return value

    @model_validator(mode="after")
    def _folder_matches_source(self) -> "DataParams":
        if self.source == "folder" and self.folder is None:
            raise ValueError("data.folder is required when data.source is 'folder'")
        if self.source != "folder" and self.folder is not None:
            raise ValueError("data.folder is only used when data.source is 'folder'")
        return self

    @model_validator(mode="after")
    def _detection_keys(self) -> "DataParams":
        """Each key of detection data only where it is read; the first rule broken is
        the error (one line, naming what is allowed)."""
        detection = self.task == DETECTION_TASK
        labelled = detection and self.source == "folder"
        rules = (
            (detection and self.source not in DETECTION_SOURCES,
             f"data.source {self.source!r} has no boxes: data.task 'detection' reads "
             f"{' or '.join(DETECTION_SOURCES)}"),
            (self.labels is not None and not labelled,
             "data.labels is only used when data.task is 'detection' and data.source is "
             "'folder'"),
            (labelled and self.labels is None,
             f"data.labels is required when data.task is 'detection' and data.source is "
             f"'folder' (allowed: {', '.join(LABEL_FORMATS)})"),
            (self.coco_json is not None and self.labels != "coco",
             "data.coco_json is only used when data.labels is 'coco'"),
            (self.labels == "coco" and self.coco_json is None,
             "data.coco_json is required when data.labels is 'coco' (the COCO JSON file; "
             "data.folder holds its images)"),
            (self.detection is not None and not detection,
             "data.detection is only used when data.task is 'detection'"),
            (self.scenes is not None and not (detection and self.source == "digit_scenes"),
             "data.scenes is only used when data.task is 'detection' and data.source is "
             "'digit_scenes'"),
        )
        broken = next((message for failed, message in rules if failed), None)
        if broken is not None:
            raise ValueError(broken)
        return self

    @property
    def decoding(self) -> DetectionDecoding | None:
        """The decoding of a detection task (``detection``, else its defaults); None for
        any other task (its outputs are not boxes)."""
        if self.task != DETECTION_TASK:
            return None
        return self.detection or DetectionDecoding()


ModelParams = Annotated[SmallCNNOptions | MobileNetV2Options | TinyDetectorOptions
                        | ModelFileOptions, Field(discriminator="architecture")]


class TrainParams(StrictModel):
    # For a model you bring (model.source: file): training it further on this data, or
    # (None) only checking and evaluating it.
    fine_tune: FineTuneOptions | None = None
    epochs: Annotated[int, count(1, 1000)] = 40
    batch_size: Annotated[int, count(1, 4096)] = 32
    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0)
    lr_schedule: Literal["constant", "cosine", "plateau"] = "constant"
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    class_weight: Literal["none", "balanced"] = "none"
    augmentation: AugmentationParams = AugmentationParams()
    seed: Seed = 42
    early_stopping_patience: Annotated[int, count(1, 1000)] = 8


PruningRecipe = Annotated[MagnitudePruningOptions | StructuredPruningOptions,
                          Field(discriminator="method")]


class OptimizeParams(StrictModel):
    """Optimisation recipes applied to the trained model; each result is another source
    model for the whole format matrix (``<name>-tflite-int8``...)."""

    pruning: list[PruningRecipe] = Field(default_factory=list)

    @field_validator("pruning")
    @classmethod
    def _unique_names(cls, value: list[Any]) -> list[Any]:
        names = [recipe.name for recipe in value]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"pruning name {duplicated[0]!r} is used twice")
        return value


class ConvertParams(StrictModel):
    """How each exported artifact is checked against its source Keras model (a detector's
    decoding is ``data.detection``, which train reads too)."""

    check_samples: Annotated[int, count(0, MAX_SAMPLES)] = Field(
        default=0, description="test images to compare; 0 = all")
    min_agreement: float = Field(default=0.99, gt=0.0, le=1.0)
    min_agreement_quantized: float = Field(default=0.95, gt=0.0, le=1.0)
    max_abs_logit_diff: float = Field(default=1e-3, gt=0.0,
                                      description="for fp32 variants only")

    @model_validator(mode="before")
    @classmethod
    def _detection_moved(cls, data: Any) -> Any:
        # Refused, not migrated: the project raises a clear error rather than silently
        # change what a params file asks (DESIGN.md), and one line says where it went.
        if isinstance(data, dict) and "detection" in data:
            raise ValueError("convert.detection moved to data.detection (train's reference "
                             "and every variant decode by it): move the section there")
        return data


class EndToEndParams(StrictModel):
    """Time each variant end to end too, as the application sees it: camera frames of
    ``frame_size`` (height, width), encoded as ``encoding``, made from the first
    ``frames`` test images, each decoded, pre-processed, quantised, inferred and
    post-processed on the device (which needs Pillow, as a release does)."""

    frame_size: tuple[Annotated[int, count(8, 8192)], Annotated[int, count(8, 8192)]] = (480, 640)
    encoding: Literal["jpeg", "png"] = "jpeg"
    quality: Annotated[int, count(1, 100)] = Field(default=90, description="JPEG quality")
    frames: Annotated[int, count(1, 10_000)] = Field(
        default=100, description="frames pushed to each device (the first test images)")


class BenchmarkParams(StrictModel):
    """The harness protocol, identical for every runtime and device."""

    warmup_runs: Annotated[int, count(0, 1_000_000)] = 20
    warmup_seconds: Seconds = 0.5
    runs: Annotated[int, count(1, 100_000)] = 200  # the harness times at most 100000
    seconds: Seconds = 2.0
    # After runs and seconds, timing goes on until the distribution-free 95% intervals of
    # p50 and p90 are each at most interval_width of their percentile, or max_seconds.
    max_seconds: Seconds = Field(
        default=10.0, description="the most seconds of timed inference once runs and seconds "
                                  "are reached (a run stops earlier when its intervals are narrow)")
    interval_width: Annotated[float, number(0, 1, above=True)] = Field(
        default=0.05, description="the widest 95% interval of p50 and of p90 a run stops at, "
                                  "relative to the percentile (0.05 = 5%)")
    accuracy_samples: Annotated[int, count(0, MAX_SAMPLES)] = Field(
        default=0, description="0 = the whole test split")
    timeout_seconds: PositiveSeconds = 600.0
    lock_timeout_seconds: Seconds = Field(
        default=600.0, description="wait for another benchmark on the same device")
    end_to_end: EndToEndParams | None = Field(
        default=None, description="also time decode + pre-process + infer + post-process")
    firmware: FirmwareSettings = Field(
        default_factory=FirmwareSettings,
        description="TFLite Micro's source archives for the firmware of a microcontroller "
                    "with a target core (farm.yaml), pinned by sha256, and their cache")


RankKey = Literal["latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput_fps",
                  "size_bytes", "accuracy", "peak_rss_mb", "energy_mj"]


def _preference_order(value: Any) -> Any:
    """``rank_by``: one measure (made a list of one), or a preference order of distinct
    measures."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if not value:
            raise ValueError("an empty preference order (name at least one measure)")
        repeated = sorted({key for key in value if value.count(key) > 1})
        if repeated:
            raise ValueError(f"{', '.join(map(str, repeated))} named twice in the preference order")
    return value


class Requirements(StrictModel):
    """Business constraints, every one optional, and how the variants that meet them are
    ranked; a device's ``requirements`` in farm.yaml override any of them for it.
    ``max_accuracy_drop`` is relative to the fp32 Keras reference (0.01 = keep 99% of it,
    the MLPerf rule). ``min_fps`` is the frame rate one camera stream needs (sequential
    batch-1 throughput). ``max_energy_mj`` bounds the energy per inference above idle
    and ``min_battery_hours`` the hours on the device's battery at its frame rate
    (farm.yaml ``battery``), both measured or estimated (:mod:`tasks.select.energy`).
    ``rank_by`` is one measure or a preference order: the first
    decides unless the best variants cannot be told apart on it (latency: their 95%
    intervals overlap), then the next one does, and size breaks what is left."""

    min_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    max_accuracy_drop: float | None = Field(default=0.01, ge=0.0, le=1.0)
    # A detector's score is its mAP@0.5 (what ``accuracy`` holds for it): these name the
    # same checks in its terms, for data.task: detection only.
    min_map50: float | None = Field(default=None, ge=0.0, le=1.0)
    max_map_drop: float | None = Field(default=None, ge=0.0, le=1.0)
    max_latency_p90_ms: LatencyLimit | None = None
    max_end_to_end_p90_ms: LatencyLimit | None = Field(
        default=None, description="p90 of decode + pre-process + infer + post-process "
                                  "(needs benchmark.end_to_end)")
    min_fps: Annotated[float, number(0, 1_000_000, above=True, unit="fps")] | None = None
    max_size_mb: MegabyteLimit | None = None
    max_peak_rss_mb: MegabyteLimit | None = None
    # Energy per inference above idle (measured by the board's meter, else estimated from
    # farm.yaml's `power`), and hours on the device's farm.yaml `battery` at its fps.
    max_energy_mj: Annotated[float, number(0, 1e9, above=True, unit="mJ")] | None = None
    min_battery_hours: Annotated[float, number(0, 1e7, above=True, unit="hours")] | None = Field(
        default=None, description="needs the device's battery: {capacity_mwh, fps} in farm.yaml")
    rank_by: Annotated[list[RankKey], BeforeValidator(_preference_order)] = Field(
        default_factory=lambda: ["latency_p50_ms"])


# A detector's requirements and the accuracy ones they stand for elsewhere.
MAP_REQUIREMENTS = {"min_map50": "min_accuracy", "max_map_drop": "max_accuracy_drop"}

# The experiment-wide requirements (params.yaml's section): the same fields.
RequirementParams = Requirements


class ReleaseParams(StrictModel):
    """How the chosen variant reaches each device as the application's model: ``auto``
    releases a device's recommended variant when it differs from what the device runs
    (and passed); ``approve`` asks a person first (the Prefect UI for a deployed run, the
    terminal for ``edgeflow run``); ``off`` never releases."""

    policy: Literal["auto", "approve", "off"] = "auto"
    keep: Annotated[int, count(2, 100)] = Field(
        default=5, description="releases kept per device (never the current or previous one)")
    check_images: Annotated[int, count(1, 10_000)] = Field(
        default=50, description="test images bundled for the release's health check")
    check_timeout_seconds: PositiveSeconds = Field(
        default=300.0, description="limit for the health check on the device")
    approval_timeout_seconds: PositiveSeconds = Field(
        default=3600.0, description="how long a deployed run waits for an approval")
    readable_by: Literal["owner", "group", "everyone"] = Field(
        default="group", description="who may read a release on the board: the device user "
        "(files 600), also its group (640: an application running as another user of that "
        "group), or everyone (644)")


class SelectParams(StrictModel):
    """How select recommends beyond the requirements: the results of an emulated board
    (farm.yaml ``emulation``) are judged and shown but get no recommendation, so nothing
    is released to it, unless ``include_emulated`` (its timings are not the hardware's)."""

    include_emulated: bool = Field(
        default=False, description="recommend (and so release) on emulated boards too")


class CompareParams(StrictModel):
    """What ``edgeflow compare`` calls a regression (:mod:`tasks.compare`): a change past
    its threshold whose 95% intervals in the two runs do not overlap."""

    latency_increase: Annotated[float, number(0, 100)] = Field(
        default=0.10, description="p50 or p90 slower by more than this fraction (0.10 = 10%)")
    accuracy_drop: Annotated[float, number(0, 1)] = Field(
        default=0.01, description="accuracy lower by more than this (absolute, 0.01 = 1 point)")
    size_increase: Annotated[float, number(0, 100)] = Field(
        default=0.05, description="artifact larger by more than this fraction")
    include_emulated: bool = Field(
        default=False, description="let emulated boards' pairs fail the gate too (they are "
                                   "shown either way; emulated against physical never is "
                                   "compared)")


class Params(StrictModel):
    data: DataParams = DataParams()
    model: ModelParams = SmallCNNOptions()
    train: TrainParams = TrainParams()
    optimize: OptimizeParams = OptimizeParams()
    quantization: QuantizationParams = QuantizationParams()
    formats: dict[str, list[str]] = Field(
        default_factory=lambda: {"tflite": ["fp32"], "onnx": ["fp32"], "openvino": ["fp32"]})
    convert: ConvertParams = ConvertParams()
    benchmark: BenchmarkParams = BenchmarkParams()
    requirements: RequirementParams = RequirementParams()
    select: SelectParams = SelectParams()
    release: ReleaseParams = ReleaseParams()
    compare: CompareParams = CompareParams()

    @field_validator("model", mode="before")
    @classmethod
    def _default_architecture(cls, value: Any) -> Any:
        # `model: {filters: [...]}` means the default architecture, as `model:` absent does;
        # `model: {source: file, path: ...}` a model the user brings.
        if isinstance(value, dict) and "architecture" not in value:
            return {**value, "architecture": "file" if "source" in value else "small_cnn"}
        return value

    @model_validator(mode="after")
    def _fine_tuning_needs_a_file_source(self) -> "Params":
        if self.train.fine_tune is not None and self.model.architecture != "file":
            raise ValueError("train.fine_tune applies to model.source: file (a model you "
                             "bring); an edgeflow architecture trains for train.epochs")
        if self.model.architecture == "file":
            channels = 1 if self.data.color == "grayscale" else 3
            for name in ("mean", "std"):
                values = getattr(self.model, name)
                if values is not None and len(values) != channels:
                    raise ValueError(f"model.{name} has {len(values)} values; data.color "
                                     f"{self.data.color} images have {channels} channel"
                                     f"{'s' if channels > 1 else ''}")
            check_task(self.model, self.data.task)
        return self

    @model_validator(mode="before")
    @classmethod
    def _map_drop_replaces_the_default_accuracy_drop(cls, data: Any) -> Any:
        # A detector's max_map_drop is its drop limit: max_accuracy_drop's default (1%)
        # would judge the same drop again, stricter. Stated too, both apply. (The
        # experiment's only: a device's override changes what it states.)
        requirements = data.get("requirements") if isinstance(data, dict) else None
        if isinstance(requirements, dict) and requirements.get("max_map_drop") is not None \
                and "max_accuracy_drop" not in requirements:
            return {**data, "requirements": {**requirements, "max_accuracy_drop": None}}
        return data

    @model_validator(mode="after")
    def _map_requirements_need_a_detector(self) -> "Params":
        for name in MAP_REQUIREMENTS:
            if getattr(self.requirements, name) is not None and self.data.task != "detection":
                raise ValueError(f"requirements.{name} applies to data.task: detection; for "
                                 f"{self.data.task} use requirements.{MAP_REQUIREMENTS[name]}")
        return self

    @model_validator(mode="after")
    def _structured_pruning_fits_the_architecture(self) -> "Params":
        # A model you bring is only known once train has read it: optimize skips what it
        # cannot prune then, with the reason (README), instead of refusing the params.
        for index, recipe in enumerate(self.optimize.pruning):
            if recipe.method == "structured" and self.model.architecture not in (
                    *STRUCTURED_ARCHITECTURES, "file"):
                raise ValueError(
                    f"optimize.pruning.{index}: structured pruning supports "
                    f"{', '.join(STRUCTURED_ARCHITECTURES)}, not model.architecture "
                    f"{self.model.architecture!r} (use method 'magnitude')")
        return self

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        validate_format_matrix(value)
        return value
