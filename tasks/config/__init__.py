"""The configuration boundary: ``params.yaml`` (the experiment) and ``farm.yaml`` (the
devices), parsed once into frozen pydantic models.

Every step receives its typed section. A bad file raises :class:`ConfigError` with one
line naming the file, the key path and what is allowed. Relative paths inside a file
are resolved against that file's folder.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from tasks.models.architectures import ARCHITECTURES, MobileNetV2Options, SmallCNNOptions
from tasks.models.model_file import FineTuneOptions, ModelFileOptions
from tasks.core import task_kinds
from tasks.core.contracts.prepared import DEFAULT_TASK
from tasks.core.errors import ConfigError
from tasks.models.formats import FORMATS, validate_format_matrix
from tasks.models.pruning import (STRUCTURED_ARCHITECTURES, MagnitudePruningOptions,
                           StructuredPruningOptions)
from tasks.core.strict import StrictModel, count, number

DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Every duration and count has an upper bound: a value past it is a typo, and an
# unbounded one (`.inf`, 1e10) overflows the thread and socket timeouts it reaches.
DAY_SECONDS = 86_400  # the longest any time limit or wait may be
MAX_SAMPLES = 1_000_000  # images used for calibration, checks or accuracy
MAX_SEED = 2**32 - 1  # NumPy's and scikit-learn's seeds are 32-bit
MAX_RETRY_WAIT_SECONDS = 60.0  # the doubling wait between connection attempts stops here
MAX_REQUIREMENT_MB = 1_048_576.0  # 1 TiB: size and memory limits
MAX_MCU_KB = 1_048_576  # 1 GiB of flash or RAM on a microcontroller

Seconds = Annotated[float, number(0, DAY_SECONDS, unit="seconds")]
PositiveSeconds = Annotated[float, number(0, DAY_SECONDS, above=True, unit="seconds")]
Seed = Annotated[int, count(0, MAX_SEED)]
LatencyLimit = Annotated[float, number(0, DAY_SECONDS * 1000, above=True, unit="ms")]
MegabyteLimit = Annotated[float, number(0, MAX_REQUIREMENT_MB, above=True, unit="MB")]


class SplitParams(StrictModel):
    val: float = Field(default=0.15, gt=0.0, lt=0.5)
    test: float = Field(default=0.2, gt=0.0, lt=0.5)


class DataParams(StrictModel):
    """Where images come from and how they become model inputs."""

    source: Literal["digits", "digit_scenes", "folder"] = "digits"
    folder: Path | None = None
    image_size: tuple[int, int] = (32, 32)
    color: Literal["grayscale", "rgb"] = "grayscale"
    fit: Literal["squash", "letterbox"] = Field(
        default="squash", description="an image of another aspect ratio is squashed to "
        "image_size, or letterboxed (scaled to fit, black borders); training and the "
        "released application do the same")
    split: SplitParams = SplitParams()
    calibration_size: Annotated[int, count(1, MAX_SAMPLES)] = 200
    seed: Seed = 42
    task: str = Field(default=DEFAULT_TASK, description="the kind of task: how the "
                      "model's outputs are checked, decoded and scored (a registered kind)")

    @field_validator("image_size")
    @classmethod
    def _image_size_in_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not all(8 <= side <= 1024 for side in value):
            raise ValueError("image_size sides must be between 8 and 1024 pixels")
        return value

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        known = task_kinds.registry().names()
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


ModelParams = Annotated[SmallCNNOptions | MobileNetV2Options | ModelFileOptions,
                        Field(discriminator="architecture")]


class AugmentationParams(StrictModel):
    """Random changes to each training image, drawn anew every epoch (seeded); the val,
    test and calibration images are never changed. All off by default: a flip turns a
    handwritten 2 into something else, so each is chosen for the data."""

    flip: Literal["none", "horizontal", "vertical", "both"] = "none"
    shift: float = Field(default=0.0, ge=0.0, le=0.5,
                         description="largest shift, as a fraction of height and width")
    rotation_degrees: float = Field(default=0.0, ge=0.0, le=180.0)
    brightness: float = Field(default=0.0, ge=0.0, le=1.0,
                              description="largest added brightness, as a fraction of white")
    contrast: float = Field(default=0.0, ge=0.0, lt=1.0,
                            description="largest relative change of contrast")


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


class QuantizationParams(StrictModel):
    """Calibration of the quantised precisions: only the calibration split is used."""

    calibration_samples: Annotated[int, count(1, MAX_SAMPLES)] = Field(
        default=200, description="images from the calib split (at most its size)")
    onnx_calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    # 7-bit weights: x86 CPUs without VNNI saturate 8-bit products (measured here: int8-qdq
    # agreement with Keras fell to 89%); harmless elsewhere, so safe as the default.
    onnx_reduce_range: bool = True
    openvino_preset: Literal["performance", "mixed"] = "performance"


class ConvertParams(StrictModel):
    """How each exported artifact is checked against its source Keras model."""

    check_samples: Annotated[int, count(0, MAX_SAMPLES)] = Field(
        default=0, description="test images to compare; 0 = all")
    min_agreement: float = Field(default=0.99, gt=0.0, le=1.0)
    min_agreement_quantized: float = Field(default=0.95, gt=0.0, le=1.0)
    max_abs_logit_diff: float = Field(default=1e-3, gt=0.0,
                                      description="for fp32 variants only")


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


RankKey = Literal["latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput_fps",
                  "size_bytes", "accuracy", "peak_rss_mb"]


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
    batch-1 throughput). ``rank_by`` is one measure or a preference order: the first
    decides unless the best variants cannot be told apart on it (latency: their 95%
    intervals overlap), then the next one does, and size breaks what is left."""

    min_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    max_accuracy_drop: float | None = Field(default=0.01, ge=0.0, le=1.0)
    max_latency_p90_ms: LatencyLimit | None = None
    max_end_to_end_p90_ms: LatencyLimit | None = Field(
        default=None, description="p90 of decode + pre-process + infer + post-process "
                                  "(needs benchmark.end_to_end)")
    min_fps: Annotated[float, number(0, 1_000_000, above=True, unit="fps")] | None = None
    max_size_mb: MegabyteLimit | None = None
    max_peak_rss_mb: MegabyteLimit | None = None
    rank_by: Annotated[list[RankKey], BeforeValidator(_preference_order)] = Field(
        default_factory=lambda: ["latency_p50_ms"])


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


class CompareParams(StrictModel):
    """What ``edgeflow compare`` calls a regression (:mod:`tasks.compare`): a change past
    its threshold whose 95% intervals in the two runs do not overlap."""

    latency_increase: Annotated[float, number(0, 100)] = Field(
        default=0.10, description="p50 or p90 slower by more than this fraction (0.10 = 10%)")
    accuracy_drop: Annotated[float, number(0, 1)] = Field(
        default=0.01, description="accuracy lower by more than this (absolute, 0.01 = 1 point)")
    size_increase: Annotated[float, number(0, 100)] = Field(
        default=0.05, description="artifact larger by more than this fraction")


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


class Accelerators(StrictModel):
    """Hints passed to the harness so a runtime uses the board's accelerator."""

    onnxruntime_providers: list[str] | None = Field(
        default=None, min_length=1,
        description="ONNX Runtime execution providers in order, e.g. [TensorrtExecutionProvider, "
                    "CUDAExecutionProvider, CPUExecutionProvider]; null = CPU")
    openvino_device: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.:,()-]{1,64}$",
        description="OpenVINO device name: CPU, GPU, NPU, AUTO:NPU,CPU...; null = CPU")
    tflite_delegate: str | None = Field(
        default=None, min_length=1,
        description="path or name of a TFLite external delegate library on the device")

    @field_validator("onnxruntime_providers")
    @classmethod
    def _provider_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not re.fullmatch(r"[A-Za-z0-9]+ExecutionProvider", name):
                raise ValueError(f"{name!r} is not an ONNX Runtime execution provider name "
                                 "(like CUDAExecutionProvider)")
        return value


class RunsHarness(StrictModel):
    """What every device that runs the harness shares: its threads, the runtimes it may
    use, its tags, accelerator hints, requirement overrides, and how many past runs it
    keeps in its working directory."""

    threads: Annotated[int, count(1, 256)] = 1
    runtimes: list[str] | None = Field(
        default=None, description="runtimes the device can run; null = all it can import")
    tags: dict[str, str] = Field(default_factory=dict)
    accelerators: Accelerators = Accelerators()
    requirements: Requirements | None = None
    keep_runs: Annotated[int, count(1, 1000)] = Field(
        default=5, description="per-run folders kept on the device (older are removed)")
    on_release: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="shell command run on the device after a release becomes current "
                    "(e.g. systemctl --user restart app); its folder is $1. If it fails, "
                    "the previous release is restored")
    on_release_timeout_seconds: PositiveSeconds = 120.0

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, value: list[str] | None) -> list[str] | None:
        known = sorted({fmt.runtime for fmt in FORMATS.values()})
        for runtime in value or []:
            if runtime not in known:
                raise ValueError(f"unknown runtime {runtime!r} (allowed: {', '.join(known)})")
        return value


class LocalDevice(RunsHarness):
    """This machine, reached through the same run/put/get interface as an SSH board."""

    transport: Literal["local"] = "local"
    workdir: Path = Path(".edgeflow/devices/local")
    python: str | None = Field(default=None, description="interpreter; null = edgeflow's own")

    def harness_python(self) -> str:
        """The interpreter that runs the harness."""
        return self.python or sys.executable


VENV_DIR = "venv"


class DeviceSetup(StrictModel):
    """How ``edgeflow farm setup`` prepares a device: a virtualenv at ``<workdir>/venv``
    with numpy and the runtimes the device runs (its ``runtimes``, else those of the
    experiment's formats), pinned to this project's versions."""

    wheelhouse: bool = Field(
        default=True, description="true: wheels are downloaded here for the device's platform "
                                  "and pushed (devices without internet); false: the device's "
                                  "pip downloads them")
    extra_packages: list[str] = Field(default_factory=list,
                                      description="more pip requirements, e.g. pillow==11.0.0")

    @field_validator("extra_packages")
    @classmethod
    def _requirement_specs(cls, value: list[str]) -> list[str]:
        for spec in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?"
                                r"((==|>=|<=|~=|!=|<|>)[A-Za-z0-9.*+!-]+)?", spec):
                raise ValueError(f"{spec!r} is not a pip requirement like name or name==1.2.3")
        return value


class SshDevice(RunsHarness):
    """A board reached over SSH (Fabric): key authentication only, its host key checked
    against the farm's known_hosts (an unknown or changed key is refused)."""

    transport: Literal["ssh"]
    host: str = Field(min_length=1)
    port: Annotated[int, count(1, 65535)] = 22
    user: str = Field(min_length=1)
    key_file: Path = Field(description="private key; relative to farm.yaml")
    known_hosts: Path = Field(description="known_hosts file; relative to farm.yaml")
    key_passphrase_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable holding the key's passphrase "
                    "(never the passphrase itself: no secrets in farm.yaml)")
    python: str = Field(default="python3", min_length=1,
                        description="interpreter on the device (with `setup`: the one that "
                                    "creates the virtualenv)")
    workdir: str = Field(default="edgeflow", min_length=1,
                         description="on the device; relative to its home (~/x is x)")
    connect_timeout: PositiveSeconds = 10.0
    keepalive_seconds: Annotated[int, count(1, 3600, unit="seconds")] = Field(
        default=15,
        description="a silent connection is probed after this long; a board that stops "
                    "answering is given up after about twice as long again")
    io_timeout: PositiveSeconds = Field(
        default=120.0, description="limit for a file transfer or a short command "
                                   "(benchmarks have benchmark.timeout_seconds)")
    connect_attempts: Annotated[int, count(1, 20)] = Field(
        default=3, description="tries to connect before the device is unreachable")
    retry_backoff_seconds: Annotated[float, number(0, MAX_RETRY_WAIT_SECONDS,
                                                   unit="seconds")] = Field(
        default=1.0, description="first wait between tries; doubles each time, up to "
                                 f"{MAX_RETRY_WAIT_SECONDS:g} s")
    setup: DeviceSetup | None = Field(
        default=None, description="`edgeflow farm setup` manages a virtualenv in the workdir "
                                  "and benchmarks run in it")

    @field_validator("workdir")
    @classmethod
    def _home_relative(cls, value: str) -> str:
        """``~`` and ``~/x`` as a shell reads them (the login user's home): nothing on the
        board expands them (commands quote the workdir, SFTP takes it as written, which
        made a folder named ``~``), and a relative workdir already is in the home."""
        if value == "~" or value.startswith("~/"):
            return value[2:].strip("/") or "."
        if value.startswith("~"):
            raise ValueError(f"{value!r}: only ~ or ~/... (the home of `user`) is understood; "
                             "write the folder relative to that home, or from /")
        return value

    def harness_python(self) -> str:
        """The interpreter that runs the harness: the managed virtualenv's, if any."""
        return f"{self.workdir}/{VENV_DIR}/bin/python" if self.setup is not None else self.python


class McuDevice(StrictModel):
    """A microcontroller board (ESP32-S3, Arduino Nano 33 BLE...): no shell to run the
    harness, so its ``tflm`` variants are checked to fit flash and RAM with margins, and
    their accuracy is that of the real TFLite Micro interpreter run on the host."""

    transport: Literal["mcu"]
    flash_kb: Annotated[int, count(1, MAX_MCU_KB)] = Field(
        description="flash available to the model and firmware")
    ram_kb: Annotated[int, count(1, MAX_MCU_KB)] = Field(
        description="RAM available to the tensor arena and firmware")
    flash_margin: float = Field(default=0.25, ge=0.0, lt=1.0,
                                description="fraction of flash kept for the firmware")
    ram_margin: float = Field(default=0.25, ge=0.0, lt=1.0,
                              description="fraction of RAM kept for the firmware")
    tags: dict[str, str] = Field(default_factory=dict)
    requirements: Requirements | None = None


Device = Annotated[LocalDevice | SshDevice | McuDevice, Field(discriminator="transport")]


class Farm(StrictModel):
    devices: dict[str, Device] = Field(min_length=1)

    @field_validator("devices", mode="before")
    @classmethod
    def _default_transport(cls, value: Any) -> Any:
        # A device without `transport` is the local kind, as the shipped farm.yaml shows.
        if isinstance(value, dict):
            return {name: {**device, "transport": "local"}
                    if isinstance(device, dict) and "transport" not in device else device
                    for name, device in value.items()}
        return value

    @field_validator("devices")
    @classmethod
    def _safe_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not DEVICE_NAME.match(name):
                raise ValueError(
                    f"device name {name!r} is not allowed (letters, digits, '_', '.', '-'; "
                    "starting with a letter or digit; at most 64 characters)")
        return value

    @field_validator("devices")
    @classmethod
    def _one_folder_each(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Two device entries reaching one folder (same host, port and workdir; a relative
        workdir is in the user's home) would release into one ``app`` and share runs:
        refused, naming both."""
        seen: dict[tuple[Any, ...], str] = {}
        for name, device in value.items():
            if not isinstance(device, SshDevice):
                continue
            folder = posixpath.normpath(device.workdir)
            place = (device.host.lower(), device.port,
                     folder if folder.startswith("/") else f"~{device.user}/{folder}")
            if place in seen:
                raise ValueError(
                    f"{seen[place]!r} and {name!r} are one folder on one board (host "
                    f"{device.host}, port {device.port}, workdir {device.workdir}): their "
                    "releases and runs would overwrite each other; give each its own workdir")
            seen[place] = name
        return value


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice (YAML loaders silently keep the last one)."""


class AliasBombError(yaml.YAMLError):
    """Aliases make the document expand past :data:`MAX_YAML_VALUES` values, or into
    itself: a "billion laughs" that would hang whatever walks the values."""


# The values a configuration file may hold once its aliases are expanded: a real
# params.yaml or farm.yaml holds a few hundred; nine nested aliases of nine ("billion
# laughs", 22 lines) expand to 9^9 and hang validation for minutes.
MAX_YAML_VALUES = 100_000


def _expanded_values(root: yaml.Node, limit: int = MAX_YAML_VALUES) -> int:
    """How many values the document under ``root`` holds once every alias is expanded
    (an alias is the node it names, counted again each time it is used); raises
    :class:`AliasBombError` past ``limit`` or on an alias inside the value it names."""
    sizes: dict[int, int] = {}  # id(node) -> its expanded size, each node counted once
    open_nodes: set[int] = set()  # the nodes on the current path: a repeat is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative: a deeply nested document must not exhaust Python's stack
        node, children_done = stack.pop()
        children = ([part for pair in node.value for part in pair]
                    if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > limit:
                raise AliasBombError(
                    f"aliases expand the document to more than {limit:,} values (line "
                    f"{node.start_mark.line + 1}); write the values out or use fewer "
                    "nested aliases")
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            raise AliasBombError(f"an alias refers to the value it is part of (line "
                                 f"{node.start_mark.line + 1}); a configuration cannot "
                                 "contain itself")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key: `formats:` written
    twice would otherwise drop the first without a word. Keys merged in with ``<<`` may
    be overridden, as YAML intends. Aliases are bounded (:func:`_expanded_values`)
    before anything is built from the document."""

    def construct_document(self, node: yaml.Node) -> Any:
        _expanded_values(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise DuplicateKeyError(f"key {key!r} appears twice (lines {first} and {line}); "
                                        "YAML would keep only the last: remove one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """A YAML document, as ``yaml.safe_load`` reads it but refusing repeated keys
    (:class:`DuplicateKeyError`) and aliases that expand past :data:`MAX_YAML_VALUES`
    values or into themselves (:class:`AliasBombError`). Every reader of a YAML file a
    user writes (params.yaml, farm.yaml, prefect.yaml) uses it."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def _read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        document = parse_yaml(text)
    except (DuplicateKeyError, AliasBombError) as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return document


# Where pydantic inserts the chosen union member's tag into an error's path (users never
# wrote it): (path prefix, position of the tag, the tags).
_TAGGED_UNIONS = ((("model",), 1, {*ARCHITECTURES, "file"}),
                  (("devices",), 2, {"local", "ssh", "mcu"}),
                  (("optimize", "pruning"), 3, {"magnitude", "structured"}))


def _user_path(parts: list[str]) -> list[str]:
    for prefix, position, tags in _TAGGED_UNIONS:
        if tuple(parts[:len(prefix)]) == prefix and len(parts) > position and parts[position] in tags:
            return parts[:position] + parts[position + 1:]
    return parts


def _one_line(path: Path, error: ValidationError) -> str:
    first = error.errors()[0]
    parts = [str(part) for part in first["loc"]]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "union_tag_invalid":
        context = first.get("ctx", {})
        parts.append(str(context.get("discriminator", "")).strip("'"))
        message = (f"{context.get('tag')!r} is not allowed "
                   f"(allowed: {context.get('expected_tags')})")
    elif first["type"] == "literal_error":
        message = f"{first['input']!r} is not allowed (allowed: {first['ctx']['expected']})"
        parts = _user_path(parts)
    else:
        parts = _user_path(parts)
    location = ".".join(parts)
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{path}: {location or 'top level'}: {message}{more}"


def _resolve(path: Path | None, base: Path) -> Path | None:
    if path is None:
        return None
    return path if path.is_absolute() else (base / path).resolve()


ConfigModel = TypeVar("ConfigModel", bound=StrictModel)


def _validated(model: type[ConfigModel], path: Path) -> ConfigModel:
    try:
        return model.model_validate(_read_yaml(path))
    except ValidationError as error:
        raise ConfigError(_one_line(path, error)) from None


def load_params(path: Path) -> Params:
    """Parse and validate ``params.yaml``; relative paths become absolute."""
    path = Path(path)
    params = _validated(Params, path)
    base = path.parent.resolve()
    data = params.data.model_copy(update={"folder": _resolve(params.data.folder, base)})
    model = params.model
    if isinstance(model, ModelFileOptions):
        model = model.model_copy(update={"path": _resolve(model.path, base)})
    return params.model_copy(update={"data": data, "model": model})


def load_farm(path: Path) -> Farm:
    """Parse and validate ``farm.yaml``; relative device workdirs become absolute."""
    path = Path(path)
    farm = _validated(Farm, path)
    base = path.parent.resolve()
    devices = {name: _with_local_paths(device, base) for name, device in farm.devices.items()}
    return farm.model_copy(update={"devices": devices})


def _with_local_paths(device: Any, base: Path) -> Any:
    """Paths on this machine become absolute (relative to farm.yaml); paths on a remote
    device stay as written."""
    if isinstance(device, LocalDevice):
        # "~" is the home of whoever runs edgeflow, as in a shell (not a folder named "~").
        return device.model_copy(update={"workdir": _resolve(device.workdir.expanduser(), base)})
    if isinstance(device, SshDevice):
        return device.model_copy(update={"key_file": _resolve(device.key_file, base),
                                         "known_hosts": _resolve(device.known_hosts, base)})
    return device


def check_key_file(name: str, device: SshDevice) -> None:
    """Refuse (:class:`ConfigError`) a device whose ``key_file`` is missing, not a file,
    unreadable, or open to group or others (OpenSSH refuses such a key; paramiko would
    use it). Checked before connecting, not at load: a command that never authenticates
    (``farm trust``, the training steps) needs no key, and key files stay off machines
    that only train."""
    path = device.key_file
    where = f"device {name!r}: key_file {path}"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist (create the key, or fix key_file in "
                          "farm.yaml)") from None
    except OSError as error:
        raise ConfigError(f"{where}: cannot read: {error.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{where} is a folder, not a private key file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(f"{where} is open to group or others (mode "
                          f"{stat.S_IMODE(info.st_mode):04o}), which OpenSSH refuses for a "
                          f"private key: chmod 600 {shlex.quote(str(path))}")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise ConfigError(f"{where}: cannot read: {error.strerror}") from None


def check_key_files(farm: Farm, names: Iterable[str] | None = None) -> None:
    """:func:`check_key_file` for every SSH device of ``names`` (default: the whole farm):
    what a command that connects calls before its first connection."""
    for name in farm.devices if names is None else names:
        device = farm.devices.get(name)
        if isinstance(device, SshDevice):
            check_key_file(name, device)


def effective_requirements(params: RequirementParams, device: Any) -> Requirements:
    """The experiment's requirements with the device's overrides applied on top."""
    merged = {key: getattr(params, key) for key in Requirements.model_fields}
    if device.requirements is not None:
        merged.update(device.requirements.model_dump(exclude_unset=True))
    return Requirements(**merged)
