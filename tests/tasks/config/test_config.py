"""The configuration boundary: params.yaml / farm.yaml -> frozen, validated models.

A bad file must raise ConfigError with ONE line that starts with the file path, names
the key path and says what is allowed. No TensorFlow/Keras is imported here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pydantic
import pytest

from tasks.config import (
    LocalDevice,
    Params,
    RequirementParams,
    Requirements,
    SshDevice,
    check_key_file,
    check_key_files,
    effective_requirements,
    load_farm,
    load_params,
)
from tasks.config.farm import EMULATIONS
from tasks.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(loader: Callable[[Path], object], path: Path) -> str:
    """Load ``path``, expect a one-line ConfigError (exit code 2); return its message."""
    with pytest.raises(ConfigError) as caught:
        loader(path)
    message = str(caught.value)
    assert "\n" not in message, f"message is not one line: {message!r}"
    assert caught.value.exit_code == 2
    return message


# --------------------------------------------------------------------------- defaults


def test_empty_params_file_gives_the_defaults(tmp_path: Path) -> None:
    params = load_params(write(tmp_path / "params.yaml", ""))

    assert params.formats == {"tflite": ["fp32"], "onnx": ["fp32"], "openvino": ["fp32"]}
    assert params.data.source == "digits"
    assert params.data.folder is None
    assert params.data.image_size == (32, 32)
    assert params.model.architecture == "small_cnn"
    assert params.train.epochs == 40
    assert params.requirements.max_accuracy_drop == 0.01
    assert params == Params()


def test_comment_only_params_file_gives_the_defaults(tmp_path: Path) -> None:
    params = load_params(write(tmp_path / "params.yaml", "# nothing set yet\n"))
    assert params == Params()


def test_valid_params_are_parsed_and_typed(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", """\
        data: {image_size: [16, 24], color: rgb, split: {val: 0.1, test: 0.1}, seed: 7}
        model: {architecture: mobilenet_v2, width_multiplier: 0.75}
        train: {epochs: 3, batch_size: 8}
        formats: {onnx: [fp32]}
        requirements: {max_latency_p90_ms: 12.5, rank_by: size_bytes}
        """)
    params = load_params(path)

    assert params.data.image_size == (16, 24)
    assert params.data.color == "rgb"
    assert params.data.split.val == pytest.approx(0.1)
    assert params.model.architecture == "mobilenet_v2"
    assert params.model.width_multiplier == pytest.approx(0.75)
    assert params.train.epochs == 3 and params.train.batch_size == 8
    assert params.train.learning_rate == pytest.approx(1e-3)  # untouched default
    assert params.formats == {"onnx": ["fp32"]}
    assert params.requirements.max_latency_p90_ms == pytest.approx(12.5)
    assert params.requirements.rank_by == ["size_bytes"]  # one measure: an order of one


def test_a_device_overrides_the_frame_rate_and_the_preference_order(tmp_path: Path) -> None:
    params = load_params(write(tmp_path / "params.yaml", """\
        requirements: {min_fps: 30, rank_by: [latency_p90_ms, accuracy]}
        """))
    farm = load_farm(write(tmp_path / "farm.yaml", """\
        devices:
          camera: {requirements: {min_fps: 60, rank_by: [accuracy, size_bytes]}}
          plain: {}
        """))
    camera = effective_requirements(params.requirements, farm.devices["camera"])
    plain = effective_requirements(params.requirements, farm.devices["plain"])
    assert (camera.min_fps, camera.rank_by) == (60, ["accuracy", "size_bytes"])
    assert (plain.min_fps, plain.rank_by) == (30, ["latency_p90_ms", "accuracy"])


def test_params_are_frozen(tmp_path: Path) -> None:
    params = load_params(write(tmp_path / "params.yaml", "train: {epochs: 3}\n"))
    with pytest.raises(pydantic.ValidationError):
        params.train.epochs = 5  # type: ignore[misc]
    assert params.train.epochs == 3


def test_loading_params_does_not_import_tensorflow_or_keras(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "model: {architecture: mobilenet_v2}\n")
    code = ("import sys; from pathlib import Path; from tasks.config import load_params; "
            f"load_params(Path({str(path)!r})); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------- bad params


ALLOWED_PRUNING_NAME = ("lower-case letters, digits and '_', starting with a letter; not "
                        "'base'")
FORMATS = "tflite, onnx, openvino, tflm, edgetpu"

# params.yaml text -> the one line after "<path>: " (exit code 2).
BAD_PARAMS = [
    pytest.param("trian: {epochs: 3}\n",
                 "top level: unknown key 'trian' (allowed: benchmark, compare, convert, data, "
                 "formats, model, optimize, quantization, release, requirements, select, train)",
                 id="unknown-top-level-key"),
    # ---- issue 28: the opt-ins for emulated boards are booleans of their own sections
    pytest.param("select: {include_emulated: maybe}\n",
                 "select.include_emulated: Input should be a valid boolean, unable to interpret "
                 "input", id="select-include-emulated"),
    pytest.param("select: {emulated: true}\n",
                 "select: unknown key 'emulated' (allowed: include_emulated)",
                 id="select-unknown-key"),
    pytest.param("compare: {include_emulated: 2}\n",
                 "compare.include_emulated: Input should be a valid boolean, unable to interpret "
                 "input", id="compare-include-emulated"),
    pytest.param("train: {epoch: 3}\n",
                 "train: unknown key 'epoch' (allowed: augmentation, batch_size, class_weight, "
                 "early_stopping_patience, epochs, fine_tune, label_smoothing, learning_rate, "
                 "lr_schedule, seed)",
                 id="unknown-nested-key"),
    # The discriminator tag (model.small_cnn) is an implementation detail, never in the path.
    pytest.param("model: {architecture: small_cnn, width_multiplier: 1.0}\n",
                 "model: unknown key 'width_multiplier' (allowed: architecture, dropout, filters)",
                 id="unknown-architecture-option"),
    pytest.param("train: {epochs: many}\n",
                 "train.epochs: must be an integer from 1 to 1000, got 'many'", id="wrong-type"),
    pytest.param("train: {epochs: 0}\n", "train.epochs: must be an integer from 1 to 1000, got 0",
                 id="out-of-range"),
    pytest.param("data: {image_size: [4, 32]}\n",
                 "data.image_size: image_size sides must be between 8 and 1024 pixels",
                 id="image-size-out-of-range"),
    pytest.param("train: {epochs: 0, batch_size: 0}\n",
                 "train.epochs: must be an integer from 1 to 1000, got 0 (+1 more)",
                 id="several-errors-on-one-line"),
    pytest.param("model: {architecture: resnet}\n",
                 "model.architecture: 'resnet' is not allowed (allowed: 'small_cnn', "
                 "'mobilenet_v2', 'tiny_detector', 'file')",
                 id="unknown-architecture"),
    pytest.param("formats: {tensorrt: [fp32]}\n",
                 f"formats: unknown format 'tensorrt' (allowed: {FORMATS})", id="unknown-format"),
    pytest.param("formats: {onnx: [int4]}\n",
                 "formats: format 'onnx' does not support precision 'int4' (supported: fp32, "
                 "int8-dynamic, int8-qdq)",
                 id="unsupported-precision"),
    pytest.param("formats: {}\n",
                 f"formats: at least one format is required (allowed: {FORMATS})",
                 id="empty-format-matrix"),
    pytest.param("data: {task: segmentation}\n",
                 "data.task: unknown task kind 'segmentation': one of classification, detection",
                 id="unknown-task-kind"),
    pytest.param("data: {source: folder}\n",
                 "data: data.folder is required when data.source is 'folder'",
                 id="folder-source-without-folder"),
    pytest.param("data: {source: digits, folder: images}\n",
                 "data: data.folder is only used when data.source is 'folder'",
                 id="folder-with-digits-source"),
    pytest.param("train: {epochs: 3}\nformats: [onnx\n",
                 "not valid YAML (line 3): expected ',' or ']', but got '<stream end>'",
                 id="invalid-yaml-names-the-line"),
    pytest.param("- train\n- epochs\n", "the top level must be a mapping of sections",
                 id="top-level-list"),
    pytest.param("just a string\n", "the top level must be a mapping of sections",
                 id="top-level-scalar"),
    # ---- optimisation and quantisation (issue 3)
    pytest.param("optimize: {pruning: [{name: p, method: lottery, sparsity: 0.5}]}\n",
                 "optimize.pruning.0.method: 'lottery' is not allowed (allowed: 'magnitude', "
                 "'structured')",
                 id="unknown-pruning-method"),
    pytest.param("optimize: {pruning: [{name: p, method: magnitude, sparsity: 1.5}]}\n",
                 "optimize.pruning.0.sparsity: Input should be less than 1",
                 id="sparsity-above-1"),
    pytest.param("optimize: {pruning: [{name: p, method: structured}]}\n",
                 "optimize.pruning.0.ratio: Field required", id="structured-without-ratio"),
    pytest.param("optimize: {pruning: [{name: Bad Name, method: magnitude, sparsity: 0.5}]}\n",
                 f"optimize.pruning.0.name: pruning name 'Bad Name' is not allowed "
                 f"({ALLOWED_PRUNING_NAME})",
                 id="bad-pruning-name"),
    pytest.param("optimize: {pruning: [{name: p, method: magnitude, sparsity: 0.5},"
                 " {name: p, method: structured, ratio: 0.5}]}\n",
                 "optimize.pruning: pruning name 'p' is used twice", id="pruning-name-twice"),
    pytest.param("optimize: {pruning: [{name: p, method: magnitude, sparsity: 0.5, ratio: 0.5}]}\n",
                 "optimize.pruning.0: unknown key 'ratio' (allowed: batch_size, epochs, "
                 "learning_rate, method, name, sparsity, update_every)",
                 id="option-of-another-method"),
    pytest.param("model: {architecture: mobilenet_v2}\n"
                 "optimize: {pruning: [{name: slim, method: structured, ratio: 0.5}]}\n",
                 "top level: optimize.pruning.0: structured pruning supports small_cnn, not "
                 "model.architecture 'mobilenet_v2' (use method 'magnitude')",
                 id="structured-pruning-of-an-unsupported-architecture"),
    pytest.param("quantization: {onnx_calibration: kl}\n",
                 "quantization.onnx_calibration: 'kl' is not allowed (allowed: 'minmax', "
                 "'entropy' or 'percentile')",
                 id="unknown-calibration"),
    pytest.param("model: {source: file}\n", "model.path: Field required", id="file-without-path"),
    pytest.param("model: {source: file, path: m.onnx, mean: [0.5, 0.5, 0.5]}\n",
                 "top level: model.mean has 3 values; data.color grayscale images have 1 "
                 "channel", id="normalisation-of-other-channels"),
    pytest.param("model: {source: file, path: m.onnx, task: detection, format: yolo}\n",
                 "top level: model.task detection does not match data.task classification: "
                 "the model must do the task its data is prepared for", id="file-of-another-task"),
    pytest.param("model: {source: file, path: m.onnx, format: yolo}\n",
                 "top level: model.format yolo is a detection output; model.task is "
                 "classification", id="yolo-format-of-a-classifier"),
    pytest.param("model: {source: file, path: m.onnx, std: [0]}\n",
                 "model.std.0: must be a number above 0 and at most 1000000, got 0",
                 id="zero-spread"),
    pytest.param("train: {fine_tune: {epochs: 3}}\n",
                 "top level: train.fine_tune applies to model.source: file (a model you bring); "
                 "an edgeflow architecture trains for train.epochs", id="fine-tune-without-file"),
    pytest.param("benchmark: {end_to_end: {encoding: gif}}\n",
                 "benchmark.end_to_end.encoding: 'gif' is not allowed (allowed: 'jpeg' or 'png')",
                 id="unknown-frame-encoding"),
    pytest.param("benchmark: {end_to_end: {frame_size: [4, 640]}}\n",
                 "benchmark.end_to_end.frame_size.0: must be an integer from 8 to 8192, got 4",
                 id="tiny-frames"),
    pytest.param("quantization: {calibration_samples: 0}\n",
                 "quantization.calibration_samples: must be an integer from 1 to 1000000, got 0",
                 id="no-calibration-samples"),
    pytest.param("formats: {tflm: [fp32]}\n",
                 "formats: format 'tflm' does not support precision 'fp32' (supported: int8)",
                 id="tflm-fp32"),
    pytest.param("formats: {openvino: [int4]}\n",
                 "formats: format 'openvino' does not support precision 'int4' (supported: fp32, "
                 "fp16, bf16, int8, int8-acc)",
                 id="openvino-int4"),
    # ---- every duration and count is bounded and the range is named (issue 9)
    # `.inf` and 1e10 once passed and overflowed a thread's timeout on every variant.
    pytest.param("benchmark: {timeout_seconds: .inf}\n",
                 "benchmark.timeout_seconds: must be a number above 0 and at most 86400 "
                 "(seconds), got inf",
                 id="timeout-inf"),
    pytest.param("benchmark: {timeout_seconds: 1e10}\n",
                 "benchmark.timeout_seconds: must be a number above 0 and at most 86400 "
                 "(seconds), got '1e10'",  # PyYAML reads 1e10 (no dot) as a string; pydantic
                 # makes it a number
                 id="timeout-1e10"),
    pytest.param("benchmark: {timeout_seconds: .nan}\n",
                 "benchmark.timeout_seconds: must be a number above 0 and at most 86400 "
                 "(seconds), got nan",
                 id="timeout-nan"),
    pytest.param("benchmark: {lock_timeout_seconds: 86401}\n",
                 "benchmark.lock_timeout_seconds: must be a number from 0 to 86400 (seconds), "
                 "got 86401",
                 id="lock-timeout"),
    pytest.param("benchmark: {seconds: -1}\n",
                 "benchmark.seconds: must be a number from 0 to 86400 (seconds), got -1",
                 id="seconds"),
    pytest.param("benchmark: {warmup_seconds: .inf}\n",
                 "benchmark.warmup_seconds: must be a number from 0 to 86400 (seconds), got inf",
                 id="warmup-seconds"),
    pytest.param("benchmark: {runs: 1000000000000}\n",
                 "benchmark.runs: must be an integer from 1 to 100000, got 1000000000000",
                 id="runs"),
    pytest.param("benchmark: {runs: true}\n",
                 "benchmark.runs: must be an integer from 1 to 100000, got True", id="runs-bool"),
    pytest.param("benchmark: {warmup_runs: 1000001}\n",
                 "benchmark.warmup_runs: must be an integer from 0 to 1000000, got 1000001",
                 id="warmup-runs"),
    pytest.param("benchmark: {accuracy_samples: 10000000}\n",
                 "benchmark.accuracy_samples: must be an integer from 0 to 1000000, got 10000000",
                 id="accuracy-samples"),
    pytest.param("convert: {check_samples: -1}\n",
                 "convert.check_samples: must be an integer from 0 to 1000000, got -1",
                 id="check-samples"),
    pytest.param("convert: {max_abs_logit_diff: .inf}\n",
                 "convert.max_abs_logit_diff: Input should be a finite number",
                 id="max-abs-logit-diff"),
    pytest.param("data: {calibration_size: 0}\n",
                 "data.calibration_size: must be an integer from 1 to 1000000, got 0",
                 id="calibration-size"),
    pytest.param("release: {keep: 1}\n",
                 "release.keep: must be an integer from 2 to 100, got 1", id="release-keep"),
    pytest.param("data: {fit: crop}\n",
                 "data.fit: 'crop' is not allowed (allowed: 'squash', 'letterbox' or 'letterbox_grey')", id="data-fit"),
    pytest.param("train: {seed: -1}\n",
                 "train.seed: must be an integer from 0 to 4294967295, got -1", id="train-seed"),
    pytest.param("data: {seed: 4294967296}\n",
                 "data.seed: must be an integer from 0 to 4294967295, got 4294967296",
                 id="data-seed"),
    pytest.param("train: {early_stopping_patience: 100000}\n",
                 "train.early_stopping_patience: must be an integer from 1 to 1000, got 100000",
                 id="patience"),
    pytest.param("model: {filters: [32, 100000]}\n",
                 "model.filters.1: must be an integer from 1 to 1024, got 100000", id="filters"),
    pytest.param("optimize: {pruning: [{name: p, method: magnitude, sparsity: 0.5, "
                 "update_every: 0}]}\n",
                 "optimize.pruning.0.update_every: must be an integer from 1 to 100000, got 0",
                 id="update-every"),
    pytest.param("requirements: {max_latency_p90_ms: .inf}\n",
                 "requirements.max_latency_p90_ms: must be a number above 0 and at most "
                 "86400000 (ms), got inf",
                 id="max-latency"),
    pytest.param("requirements: {max_peak_rss_mb: 0}\n",
                 "requirements.max_peak_rss_mb: must be a number above 0 and at most 1048576 "
                 "(MB), got 0",
                 id="max-peak-rss"),
    # ---- a key written twice (issue 9): YAML loaders silently keep the last
    pytest.param("formats: {onnx: [fp32]}\ntrain: {epochs: 3}\nformats: {tflite: [fp32]}\n",
                 "key 'formats' appears twice (lines 1 and 3); YAML would keep only the last: "
                 "remove one",
                 id="duplicate-key"),
    pytest.param("train: {epochs: 3, epochs: 4}\n",
                 "key 'epochs' appears twice (lines 1 and 1); YAML would keep only the last: "
                 "remove one",
                 id="duplicate-on-one-line"),
]


@pytest.mark.parametrize("text, message", BAD_PARAMS)
def test_bad_params_are_one_line_naming_the_key_and_what_is_allowed(
        tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "params.yaml", text)
    assert config_error(load_params, path) == f"{path}: {message}"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "params.yaml"
    assert config_error(load_params, path) == f"{path}: file not found"


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(b"train: {epochs: \xff\xfe}\n")
    assert config_error(load_params, path) == f"{path}: not UTF-8 text (byte 16)"


def test_params_folder_is_named_as_a_folder(tmp_path: Path) -> None:
    assert config_error(load_params, tmp_path) == f"{tmp_path}: is a folder, not a YAML file"


# --------------------------------------------------------------------------- YAML aliases


def _laughs(section: str, levels: int = 9) -> str:
    """A "billion laughs" under ``section``: each of ``levels`` lists holds the previous
    one nine times (9^9 strings once expanded), in 2 + ``levels`` lines."""
    rows = ["  - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    rows += [f"  - &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels)]
    return f"{section}:\n  epochs:\n" + "\n".join(rows) + "\n"


def _load_in_a_child(loader: str, path: Path) -> subprocess.CompletedProcess[str]:
    """``loader(path)`` in a process of its own, given 20 s: a loader that hangs fails
    the test instead of hanging it."""
    code = (f"from tasks.config import {loader}\n"
            "from tasks.core.errors import ConfigError\n"
            "import sys\n"
            f"try:\n    {loader}(sys.argv[1])\n"
            "except ConfigError as error:\n    print(error)\n")
    try:
        return subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, text=True,
                              capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{loader} still ran after 20 s on an alias bomb")


@pytest.mark.parametrize("loader, name, section", [("load_params", "params.yaml", "train"),
                                                   ("load_farm", "farm.yaml", "devices")])
def test_an_alias_bomb_is_refused_in_one_line_at_once(tmp_path: Path, loader: str, name: str,
                                                      section: str) -> None:
    path = write(tmp_path / name, _laughs(section))
    assert len(path.read_text().splitlines()) == 11
    done = _load_in_a_child(loader, path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"{path}: aliases expand the document to more than 100,000 values "
                           "(line 8); write the values out or use fewer nested aliases\n")


def test_aliases_that_expand_to_a_little_are_still_read(tmp_path: Path) -> None:
    """Anchors and merge keys have real uses (one device's settings shared by others)."""
    farm = load_farm(write(tmp_path / "farm.yaml", """\
        devices:
          a: &shared {transport: local, threads: 2, workdir: /srv/a}
          b: {<<: *shared, workdir: /srv/b}
        """))
    params = load_params(write(tmp_path / "params.yaml", """\
        formats: {tflite: &both [fp32, fp16], openvino: *both}
        """))
    assert params.formats == {"tflite": ["fp32", "fp16"], "openvino": ["fp32", "fp16"]}
    assert [(device.threads, str(device.workdir)) for device in farm.devices.values()] == [
        (2, "/srv/a"), (2, "/srv/b")]


def test_an_alias_inside_its_own_value_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "formats: {tflite: &self [fp32, *self]}\n")
    assert config_error(load_params, path) == (
        f"{path}: an alias refers to the value it is part of (line 1); a configuration "
        "cannot contain itself")


# --------------------------------------------------------------------------- paths


def test_relative_data_folder_resolves_against_the_params_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = tmp_path / "experiment"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = write(experiment / "params.yaml", "data: {source: folder, folder: images/raw}\n")
    monkeypatch.chdir(elsewhere)

    # a relative path to the params file too: the base is its folder, not the cwd
    params = load_params(Path("..") / "experiment" / "params.yaml")

    assert params.data.folder == (experiment / "images" / "raw").resolve()
    assert params.data.folder.is_absolute()
    assert load_params(path).data.folder == params.data.folder


def test_parent_relative_data_folder_is_normalised(tmp_path: Path) -> None:
    path = write(tmp_path / "exp" / "params.yaml", "data: {source: folder, folder: ../shared}\n")
    assert load_params(path).data.folder == (tmp_path / "shared").resolve()


def test_absolute_data_folder_is_kept(tmp_path: Path) -> None:
    images = (tmp_path / "somewhere" / "images").resolve()
    path = write(tmp_path / "exp" / "params.yaml",
                 f"data: {{source: folder, folder: '{images}'}}\n")
    assert load_params(path).data.folder == images


# --------------------------------------------------------------------------- farm.yaml


def test_valid_local_device(tmp_path: Path) -> None:
    path = write(tmp_path / "farm.yaml", """\
        devices:
          laptop:
            transport: local
            threads: 4
            runtimes: [onnxruntime, tflite]
            tags: {cpu: x86_64}
          pi-4.b_2: {}
        """)
    farm = load_farm(path)

    assert set(farm.devices) == {"laptop", "pi-4.b_2"}
    laptop = farm.devices["laptop"]
    assert laptop.transport == "local"
    assert laptop.threads == 4
    assert laptop.runtimes == ["onnxruntime", "tflite"]
    assert laptop.tags == {"cpu": "x86_64"}
    assert laptop.requirements is None
    other = farm.devices["pi-4.b_2"]
    assert other.runtimes is None and other.threads == 1
    # the default workdir is relative too, so it is anchored at the farm file's folder
    assert other.workdir == (tmp_path / ".edgeflow" / "devices" / "local").resolve()


def test_an_emulated_board_says_how_and_a_physical_one_says_nothing(tmp_path: Path) -> None:
    farm = load_farm(write(tmp_path / "farm.yaml", f"""\
        devices:
          pi5: {{{SSH}, port: 2201, emulation: qemu-user}}
          vm: {{emulation: qemu-system}}
          pi4: {{{SSH}, port: 2202}}
        """))
    assert {name: device.emulation for name, device in farm.devices.items()} == {
        "pi5": "qemu-user", "vm": "qemu-system", "pi4": None}
    assert EMULATIONS == ("qemu-user", "qemu-system")
    assert load_params(write(tmp_path / "params.yaml", "")).select.include_emulated is False
    assert load_params(write(tmp_path / "p.yaml", "select: {include_emulated: true}\n"
                             "compare: {include_emulated: true}\n")).compare.include_emulated


def test_relative_workdir_resolves_against_the_farm_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "lab" / "farm.yaml", "devices: {pi: {workdir: work/pi}}\n")
    monkeypatch.chdir(tmp_path)

    farm = load_farm(Path("lab") / "farm.yaml")

    assert farm.devices["pi"].workdir == (tmp_path / "lab" / "work" / "pi").resolve()
    assert farm.devices["pi"].workdir.is_absolute()
    assert load_farm(path) == farm


def test_absolute_workdir_is_kept(tmp_path: Path) -> None:
    workdir = (tmp_path / "abs" / "work").resolve()
    path = write(tmp_path / "lab" / "farm.yaml", f"devices: {{pi: {{workdir: '{workdir}'}}}}\n")
    assert load_farm(path).devices["pi"].workdir == workdir


def test_a_workdir_in_the_home_is_written_with_or_without_a_tilde(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``~/x`` made a folder named ``~`` on the board (SFTP and quoted commands do not
    expand it) and in the farm's folder here: it is the home's ``x``, as a shell reads it."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    farm = load_farm(write(tmp_path / "farm.yaml", f"""\
        devices:
          pi: {{{SSH}, workdir: ~/boards/pi}}
          home: {{{SSH.replace("10.0.0.2", "10.0.0.3")}, workdir: "~"}}
          here: {{workdir: ~/edgeflow/here}}
        """))
    assert farm.devices["pi"].workdir == "boards/pi"
    assert farm.devices["home"].workdir == "."
    assert farm.devices["here"].workdir == tmp_path / "home" / "edgeflow" / "here"
    # Different ports, hosts or users with a home-relative workdir are different folders.
    assert len(load_farm(write(tmp_path / "two.yaml", f"""\
        devices:
          a: {{{SSH}}}
          b: {{{SSH}, port: 2222}}
          c: {{{SSH.replace("user: pi", "user: ops")}}}
        """)).devices) == 3


# --------------------------------------------------------------------------- bad farm.yaml


SSH = "transport: ssh, host: 10.0.0.2, user: pi, key_file: k, known_hosts: kh"


def ssh_farm(settings: str) -> str:
    """farm.yaml text: one SSH device ``pi`` with these extra settings."""
    return f"devices: {{pi: {{{SSH}, {settings}}}}}\n"


HOSTILE_NAMES = ["a; rm -rf /", "../escape", "-rf", "has space", "x" * 65, ".hidden", "$(reboot)"]
NAME_RULE = ("letters, digits, '_', '.', '-'; starting with a letter or digit; at most 64 "
             "characters")
MCU = "transport: mcu, flash_kb: 4096"

# farm.yaml text -> the one line after "<path>: " (exit code 2).
BAD_FARMS = [
    pytest.param("devices: {pi: {runtimes: [onnxruntime, tensorrt]}}\n",
                 "devices.pi.runtimes: unknown runtime 'tensorrt' (allowed: edgetpu, "
                 "onnxruntime, openvino, tflite, tflm)",
                 id="unknown-runtime"),
    pytest.param("devices: {}\n",
                 "devices: Dictionary should have at least 1 item after validation, not 0",
                 id="empty-devices"),
    pytest.param("", "devices: Field required", id="missing-devices"),
    pytest.param("devices: {pi: {transport: telnet}}\n",
                 "devices.pi.transport: 'telnet' is not allowed (allowed: 'local', 'ssh', 'mcu')",
                 id="unknown-transport"),
    pytest.param("devices: {pi: {thread: 2}}\n",
                 "devices.pi: unknown key 'thread' (allowed: accelerators, battery, emulation, energy, "
                 "keep_runs, on_release, on_release_timeout_seconds, power, python, requirements, "
                 "runtimes, tags, threads, transport, workdir)",
                 id="unknown-device-key"),
    pytest.param("devices: {pi: {requirements: {rank: size_bytes}}}\n",
                 "devices.pi.requirements: unknown key 'rank' (allowed: max_accuracy_drop, "
                 "max_end_to_end_p90_ms, max_energy_mj, max_latency_p90_ms, max_map_drop, "
                 "max_peak_rss_mb, max_size_mb, min_accuracy, min_battery_hours, min_fps, "
                 "min_map50, rank_by)",
                 id="unknown-device-requirement"),
    pytest.param("devices: {pi: {requirements: {rank_by: [accuracy, speed]}}}\n",
                 "devices.pi.requirements.rank_by.1: 'speed' is not allowed (allowed: "
                 "'latency_p50_ms', 'latency_p90_ms', 'latency_p99_ms', 'throughput_fps', "
                 "'size_bytes', 'accuracy', 'peak_rss_mb' or 'energy_mj')",
                 id="unknown-rank-measure"),
    pytest.param("devices: {pi: {requirements: {rank_by: [accuracy, accuracy]}}}\n",
                 "devices.pi.requirements.rank_by: accuracy named twice in the preference order",
                 id="repeated-rank-measure"),
    pytest.param("devices: {pi: {requirements: {min_fps: -30}}}\n",
                 "devices.pi.requirements.min_fps: must be a number above 0 and at most 1000000 "
                 "(fps), got -30",
                 id="negative-frame-rate"),
    *(pytest.param(f"devices:\n  {name!r}: {{}}\n".replace("\"", "'"),
                   f"devices: device name {name!r} is not allowed ({NAME_RULE})",
                   id=f"hostile-name-{number}")
      for number, name in enumerate(HOSTILE_NAMES)),
    # ---- microcontroller profiles
    pytest.param("devices: {esp: {transport: mcu, ram_kb: 512}}\n",
                 "devices.esp.flash_kb: Field required", id="mcu-without-flash"),
    pytest.param(f"devices: {{esp: {{{MCU}, ram_kb: 512, threads: 2}}}}\n",
                 "devices.esp: unknown key 'threads' (allowed: battery, clock_mhz, cpi, flash_kb, "
                 "flash_margin, power, ram_kb, ram_margin, requirements, tags, target, transport)",
                 id="mcu-threads"),
    # ---- a microcontroller's emulated core (target, clock_mhz, cpi)
    pytest.param(f"devices: {{esp: {{{MCU}, ram_kb: 512, target: xtensa-lx7, clock_mhz: 240}}}}\n",
                 "devices.esp.target: unknown core 'xtensa-lx7' (allowed: cortex-m4)",
                 id="mcu-unknown-core"),
    pytest.param(f"devices: {{nano: {{{MCU}, ram_kb: 256, target: cortex-m4}}}}\n",
                 "devices.nano: target cortex-m4 needs clock_mhz (the core's clock in MHz, e.g. "
                 "64 for an nRF52840)", id="mcu-target-without-clock"),
    pytest.param(f"devices: {{nano: {{{MCU}, ram_kb: 256, clock_mhz: 64, cpi: 1.5}}}}\n",
                 "devices.nano: clock_mhz and cpi only apply with target (a core edgeflow "
                 "emulates: cortex-m4)", id="mcu-clock-without-target"),
    pytest.param(f"devices: {{nano: {{{MCU}, ram_kb: 256, target: cortex-m4, clock_mhz: 0}}}}\n",
                 "devices.nano.clock_mhz: Input should be greater than 0", id="mcu-clock-zero"),
    pytest.param(f"devices: {{nano: {{{MCU}, ram_kb: 256, target: cortex-m4, clock_mhz: 64, "
                 f"cpi: 11}}}}\n",
                 "devices.nano.cpi: Input should be less than or equal to 10",
                 id="mcu-cpi-bounded"),
    pytest.param(f"devices: {{esp: {{{MCU}, ram_kb: 512, ram_margin: 1.0}}}}\n",
                 "devices.esp.ram_margin: Input should be less than 1", id="mcu-ram-margin"),
    pytest.param(f"devices: {{esp: {{{MCU}, ram_kb: 10000000000}}}}\n",
                 "devices.esp.ram_kb: must be an integer from 1 to 1048576, got 10000000000",
                 id="mcu-memory-bounded"),
    # ---- SSH devices
    pytest.param("devices: {pi: {transport: ssh, host: h, user: u, key_file: k}}\n",
                 "devices.pi.known_hosts: Field required", id="ssh-without-known-hosts"),
    pytest.param(ssh_farm("accelerators: {onnxruntime_providers: [cuda]}"),
                 "devices.pi.accelerators.onnxruntime_providers: 'cuda' is not an ONNX Runtime "
                 "execution provider name (like CUDAExecutionProvider)",
                 id="provider-name"),
    pytest.param(ssh_farm("accelerators: {openvino_device: 'CPU; reboot'}"),
                 "devices.pi.accelerators.openvino_device: String should match pattern "
                 "'^[A-Za-z0-9_.:,()-]{1,64}$'",
                 id="openvino-device"),
    pytest.param(ssh_farm("accelerators: {tensorrt: true}"),
                 "devices.pi.accelerators: unknown key 'tensorrt' (allowed: "
                 "onnxruntime_providers, openvino_device, tflite_delegate)",
                 id="unknown-accelerator"),
    pytest.param(ssh_farm("keep_runs: 0"),
                 "devices.pi.keep_runs: must be an integer from 1 to 1000, got 0", id="keep-runs"),
    pytest.param(ssh_farm("setup: {extra_packages: ['x; touch PWNED']}"),
                 "devices.pi.setup.extra_packages: 'x; touch PWNED' is not a pip requirement "
                 "like name or name==1.2.3",
                 id="extra-package"),
    pytest.param(ssh_farm("setup: {venv: /opt}"),
                 "devices.pi.setup: unknown key 'venv' (allowed: extra_packages, wheelhouse)",
                 id="setup-key"),
    pytest.param(ssh_farm("password: hunter2"),
                 "devices.pi: unknown key 'password' (allowed: accelerators, battery, connect_attempts, "
                 "connect_timeout, emulation, energy, host, io_timeout, keep_runs, keepalive_seconds, "
                 "key_file, key_passphrase_env, known_hosts, on_release, on_release_timeout_seconds, "
                 "port, power, python, requirements, "
                 "retry_backoff_seconds, runtimes, setup, tags, task_retries, "
                 "task_retry_delay_seconds, threads, transport, user, workdir)",
                 id="password"),
    # ---- every SSH duration and count is bounded and the range is named (issue 9)
    pytest.param(ssh_farm("connect_attempts: 0"),
                 "devices.pi.connect_attempts: must be an integer from 1 to 20, got 0",
                 id="connect-attempts-0"),
    pytest.param(ssh_farm("connect_timeout: .inf"),
                 "devices.pi.connect_timeout: must be a number above 0 and at most 86400 "
                 "(seconds), got inf",
                 id="connect-timeout"),
    pytest.param(ssh_farm("io_timeout: 1.0e+10"),
                 "devices.pi.io_timeout: must be a number above 0 and at most 86400 (seconds), "
                 "got 10000000000.0",
                 id="io-timeout"),
    pytest.param(ssh_farm("keepalive_seconds: 3601"),
                 "devices.pi.keepalive_seconds: must be an integer from 1 to 3600 (seconds), "
                 "got 3601",
                 id="keepalive"),
    pytest.param(ssh_farm("connect_attempts: 21"),
                 "devices.pi.connect_attempts: must be an integer from 1 to 20, got 21",
                 id="connect-attempts-21"),
    pytest.param(ssh_farm("retry_backoff_seconds: .inf"),
                 "devices.pi.retry_backoff_seconds: must be a number from 0 to 60 (seconds), "
                 "got inf",
                 id="retry-backoff"),
    pytest.param(ssh_farm("port: 70000"),
                 "devices.pi.port: must be an integer from 1 to 65535, got 70000", id="port"),
    pytest.param(ssh_farm("threads: 0"),
                 "devices.pi.threads: must be an integer from 1 to 256, got 0", id="threads"),
    # ---- issue 25 item 29: a folder named "~"; two entries for one folder of one board
    pytest.param(ssh_farm("workdir: '~bob/edgeflow'"),
                 "devices.pi.workdir: '~bob/edgeflow': only ~ or ~/... (the home of `user`) is "
                 "understood; write the folder relative to that home, or from /", id="tilde-user"),
    pytest.param(f"devices:\n  pi: {{{SSH}, workdir: ~/edgeflow}}\n"
                 f"  pi-again: {{{SSH.replace('10.0.0.2', '10.0.0.2'.upper())}}}\n",
                 "devices: 'pi' and 'pi-again' are one folder on one board (host 10.0.0.2, port 22, "
                 "workdir edgeflow): their releases and runs would overwrite each other; give each "
                 "its own workdir", id="one-folder-twice"),
    pytest.param(f"devices:\n  a: {{{SSH}, workdir: /srv/ef}}\n"
                 f"  b: {{{SSH.replace('user: pi', 'user: ops')}, workdir: /srv/ef/}}\n",
                 "devices: 'a' and 'b' are one folder on one board (host 10.0.0.2, port 22, "
                 "workdir /srv/ef/): their releases and runs would overwrite each other; give "
                 "each its own workdir", id="one-absolute-folder-two-users"),
    # ---- issue 28: how a board is emulated, from a fixed list; never on an MCU profile
    pytest.param(ssh_farm("emulation: qemu"),
                 "devices.pi.emulation: 'qemu' is not allowed (allowed: 'qemu-user' or "
                 "'qemu-system')", id="emulation-unknown"),
    pytest.param("devices: {pi: {emulation: true}}\n",
                 "devices.pi.emulation: True is not allowed (allowed: 'qemu-user' or "
                 "'qemu-system')", id="emulation-not-a-name"),
    pytest.param(f"devices: {{esp: {{{MCU}, ram_kb: 512, emulation: qemu-system}}}}\n",
                 "devices.esp: unknown key 'emulation' (allowed: battery, clock_mhz, cpi, flash_kb, "
                 "flash_margin, power, ram_kb, ram_margin, requirements, tags, target, transport)", id="emulation-on-an-mcu"),
    # ---- a key written twice, nested (issue 9)
    pytest.param("devices:\n  pi:\n    threads: 2\n    keep_runs: 3\n    threads: 4\n",
                 "key 'threads' appears twice (lines 3 and 5); YAML would keep only the last: "
                 "remove one",
                 id="nested-duplicate"),
]


@pytest.mark.parametrize("text, message", BAD_FARMS)
def test_a_bad_farm_is_one_line_naming_the_key_and_what_is_allowed(
        tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "farm.yaml", text)
    assert config_error(load_farm, path) == f"{path}: {message}"


# --------------------------------------------------------------------------- requirements


def test_device_override_replaces_only_the_keys_it_sets(tmp_path: Path) -> None:
    params = load_params(write(tmp_path / "params.yaml", """\
        requirements:
          max_accuracy_drop: 0.02
          max_latency_p90_ms: 50
          max_size_mb: 10
        """)).requirements
    farm = load_farm(write(tmp_path / "farm.yaml", """\
        devices:
          pi: {requirements: {max_latency_p90_ms: 5, max_peak_rss_mb: 256}}
          laptop: {}
        """))

    merged = effective_requirements(params, farm.devices["pi"])

    assert isinstance(merged, Requirements)
    assert merged.max_latency_p90_ms == 5            # overridden
    assert merged.max_peak_rss_mb == 256             # set only by the device
    # the device model's own defaults (max_accuracy_drop=0.01) must not leak in
    assert merged.max_accuracy_drop == pytest.approx(0.02)
    assert merged.max_size_mb == 10
    assert merged.min_accuracy is None
    # no override: the experiment's requirements as they are
    plain = effective_requirements(params, farm.devices["laptop"])
    assert plain.model_dump() == {key: getattr(params, key) for key in Requirements.model_fields}
    # the experiment's own object is untouched
    assert params.max_latency_p90_ms == 50


def test_device_override_can_disable_a_requirement_with_null() -> None:
    params = RequirementParams(max_accuracy_drop=0.02, min_accuracy=0.9)
    device = LocalDevice(requirements=Requirements(max_accuracy_drop=None))

    merged = effective_requirements(params, device)

    assert merged.max_accuracy_drop is None
    assert merged.min_accuracy == pytest.approx(0.9)


# --------------------------------------------------------------------------- shipped files


def test_the_shipped_params_and_farm_parse() -> None:
    root = Path(__file__).resolve().parents[3]
    params = load_params(root / "params.yaml")
    assert {recipe.method for recipe in params.optimize.pruning} == {"magnitude", "structured"}
    assert params.formats["tflite"] == ["fp32", "fp16", "dynamic", "int8"]
    farm = load_farm(root / "farm.yaml")
    assert {device.transport for device in farm.devices.values()} == {"local", "mcu"}
    # The Nano 33 BLE's Cortex-M4F is emulated at its 64 MHz; the ESP32-S3's Xtensa is not.
    nano, esp = farm.devices["nano33-ble"], farm.devices["esp32-s3"]
    assert (nano.target, nano.clock_mhz, nano.cycles_per_instruction) == ("cortex-m4", 64, 1.25)
    assert esp.target is None
    firmware = params.benchmark.firmware
    assert firmware.sources == (root.parent / "shared" / "third_party").resolve()
    assert firmware.sources_sha256 is not None and firmware.cache is None


def test_ssh_device_resolves_local_paths_but_not_remote_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "lab" / "farm.yaml", """\
        devices:
          pi: {transport: ssh, host: 10.0.0.2, user: pi, key_file: keys/id, known_hosts: keys/kh,
               workdir: edgeflow, python: /opt/venv/bin/python}
        """)
    device = load_farm(path).devices["pi"]
    assert device.key_file == (tmp_path / "lab" / "keys" / "id").resolve()
    assert device.known_hosts == (tmp_path / "lab" / "keys" / "kh").resolve()
    assert device.workdir == "edgeflow" and device.port == 22


def test_a_managed_device_runs_the_harness_in_its_venv(tmp_path: Path) -> None:
    farm = load_farm(write(tmp_path / "farm.yaml", f"""\
        devices:
          managed: {{{SSH}, workdir: ef, setup: {{}}}}
          plain: {{{SSH}, python: /opt/py/bin/python3}}
        """))
    assert farm.devices["managed"].harness_python() == "ef/venv/bin/python"
    assert farm.devices["plain"].harness_python() == "/opt/py/bin/python3"


# --------------------------------------------------------------------------- issue 9: limits


def test_the_upper_limits_themselves_are_allowed(tmp_path: Path) -> None:
    params = load_params(write(tmp_path / "params.yaml", """\
        benchmark: {timeout_seconds: 86400, lock_timeout_seconds: 86400, runs: 100000}
        train: {seed: 4294967295}
        """))
    assert params.benchmark.timeout_seconds == 86400.0
    assert params.benchmark.runs == 100_000 and params.train.seed == 4294967295
    farm = load_farm(write(tmp_path / "farm.yaml",
                           ssh_farm("connect_attempts: 20, io_timeout: 86400")))
    assert farm.devices["pi"].connect_attempts == 20 and farm.devices["pi"].io_timeout == 86400.0


def test_keys_merged_in_by_an_anchor_may_be_overridden(tmp_path: Path) -> None:
    path = write(tmp_path / "farm.yaml", """\
        devices:
          pi: &board {threads: 2, keep_runs: 3}
          pi2: {<<: *board, threads: 4}
        """)
    farm = load_farm(path)
    assert farm.devices["pi2"].threads == 4 and farm.devices["pi2"].keep_runs == 3


# --------------------------------------------------------------------------- issue 9: key files


def key_device(tmp_path: Path, key_file: Path) -> SshDevice:
    return SshDevice(transport="ssh", host="10.0.0.2", user="pi", key_file=key_file,
                     known_hosts=tmp_path / "known_hosts")


def private_key(tmp_path: Path, mode: int) -> Path:
    key = tmp_path / "farm key"  # a space: the chmod advice must be quoted
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    key.chmod(mode)
    return key


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_an_owner_only_key_file_is_accepted(tmp_path: Path, mode: int) -> None:
    check_key_file("pi", key_device(tmp_path, private_key(tmp_path, mode)))


def test_a_missing_key_file_is_a_config_error_naming_device_and_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        check_key_file("pi", key_device(tmp_path, tmp_path / "absent"))
    assert str(caught.value) == (f"device 'pi': key_file {tmp_path / 'absent'} does not exist "
                                 "(create the key, or fix key_file in farm.yaml)")
    assert caught.value.exit_code == 2


def test_a_folder_as_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        check_key_file("pi", key_device(tmp_path, tmp_path))
    assert str(caught.value) == f"device 'pi': key_file {tmp_path} is a folder, not a private key file"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_key_file_open_to_others_is_refused_saying_how_to_fix_it(tmp_path: Path,
                                                                   mode: int) -> None:
    key = private_key(tmp_path, mode)
    with pytest.raises(ConfigError) as caught:
        check_key_file("pi", key_device(tmp_path, key))
    assert str(caught.value) == (
        f"device 'pi': key_file {key} is open to group or others (mode {mode:04o}), which "
        f"OpenSSH refuses for a private key: chmod 600 '{key}'")


def test_the_farm_check_covers_its_ssh_devices_only(tmp_path: Path) -> None:
    good = private_key(tmp_path, 0o600)
    path = write(tmp_path / "farm.yaml", f"""\
        devices:
          here: {{}}
          esp: {{transport: mcu, flash_kb: 4096, ram_kb: 512}}
          good: {{transport: ssh, host: h, user: u, key_file: '{good}', known_hosts: kh}}
          bad: {{transport: ssh, host: h2, user: u, key_file: absent, known_hosts: kh}}
        """)
    farm = load_farm(path)  # loading needs no key: `farm trust` and training run without one

    check_key_files(farm, ["here", "esp", "good"])
    with pytest.raises(ConfigError, match=r"^device 'bad': key_file .*/absent does not exist"):
        check_key_files(farm)


# ------------------------------------------------------- farm.yaml, each alternative (issue 27)


@pytest.mark.parametrize("change", ["host: 10.0.0.9", "port: 2222", "user: ops",
                                    "workdir: edgeflow2", "workdir: /srv/edgeflow"])
def test_a_board_entry_differing_in_one_part_of_its_place_is_another_folder(
        tmp_path: Path, change: str) -> None:
    """Host, port, user (for a home-relative workdir) and workdir each make a place of
    its own: two entries differing in any one of them are both accepted."""
    key = change.split(":")[0]
    other = ", ".join(part for part in SSH.split(", ") if not part.startswith(key + ":"))
    farm = load_farm(write(tmp_path / "farm.yaml", f"""\
        devices:
          a: {{{SSH}}}
          b: {{{other}, {change}}}
        """))
    assert list(farm.devices) == ["a", "b"]


@pytest.mark.parametrize("workdir, spelled", [("/srv/ef", "/srv/./ef/"), ("ef", "~/ef"),
                                              ("ef", "ef/sub/..")])
def test_one_folder_spelled_two_ways_is_still_one_folder(tmp_path: Path, workdir: str,
                                                        spelled: str) -> None:
    """The workdir normalised, the host name in any case (DNS ignores it)."""
    board = SSH.replace("10.0.0.2", "pi.lab")
    path = write(tmp_path / "farm.yaml", f"""\
        devices:
          a: {{{board}, workdir: '{workdir}'}}
          b: {{{board.replace("pi.lab", "PI.Lab")}, workdir: '{spelled}'}}
        """)
    assert config_error(load_farm, path).startswith(
        f"{path}: devices: 'a' and 'b' are one folder on one board (host PI.Lab, port 22, ")


def test_accepted_hints_and_requirements_reach_the_device_as_written(tmp_path: Path) -> None:
    farm = load_farm(write(tmp_path / "farm.yaml", ssh_farm(
        "accelerators: {onnxruntime_providers: [TensorrtExecutionProvider, "
        "CPUExecutionProvider], openvino_device: 'AUTO:NPU,CPU'}, "
        "setup: {wheelhouse: false, extra_packages: [pillow, 'pillow[avif]>=11.0', "
        "'numpy~=2.1', 'a.b-c_d!=1.0+local']}")))
    device = farm.devices["pi"]
    assert device.accelerators.onnxruntime_providers == ["TensorrtExecutionProvider",
                                                         "CPUExecutionProvider"]
    assert device.accelerators.openvino_device == "AUTO:NPU,CPU"
    assert device.setup is not None and device.setup.wheelhouse is False
    assert device.setup.extra_packages == ["pillow", "pillow[avif]>=11.0", "numpy~=2.1",
                                           "a.b-c_d!=1.0+local"]
    mcu = load_farm(write(tmp_path / "mcu.yaml", "devices: {esp: {transport: mcu, "
                                                 "flash_kb: 1048576, ram_kb: 1, "
                                                 "flash_margin: 0.0}}\n")).devices["esp"]
    assert (mcu.flash_kb, mcu.ram_kb, mcu.flash_margin, mcu.ram_margin) == (1048576, 1, 0.0,
                                                                             0.25)


@pytest.mark.parametrize("workdir, kept", [("~/", "."), ("~/a/b/", "a/b"), ("~//x", "x"),
                                           ("/abs/~x", "/abs/~x"), ("rel", "rel")])
def test_a_home_relative_workdir_loses_only_its_tilde(tmp_path: Path, workdir: str,
                                                     kept: str) -> None:
    farm = load_farm(write(tmp_path / "farm.yaml", ssh_farm(f"workdir: '{workdir}'")))
    assert farm.devices["pi"].workdir == kept


# --------------------------------------------------------------------------- firmware sources


def test_the_firmware_sources_are_relative_to_params_yaml_and_pinned_by_a_sha256(
        tmp_path: Path) -> None:
    params = load_params(write(tmp_path / "lab" / "params.yaml", f"""\
        benchmark:
          firmware: {{sources: ../third_party, sources_sha256: '{"ab" * 32}', cache: fw}}
        """))
    firmware = params.benchmark.firmware
    assert firmware.sources == (tmp_path / "third_party").resolve()
    assert firmware.cache == (tmp_path / "lab" / "fw").resolve()
    assert firmware.sources_sha256 == "ab" * 32
    # Only the pin keys the benchmark's cache and reaches MLflow: not where things lie.
    assert params.model_dump(mode="json")["benchmark"]["firmware"] == {
        "sources_sha256": "ab" * 32}
    assert load_params(write(tmp_path / "bare.yaml", "{}\n")).benchmark.firmware.sources is None
    path = write(tmp_path / "pin.yaml", "benchmark: {firmware: {sources_sha256: abc}}\n")
    assert config_error(load_params, path) == (
        f"{path}: benchmark.firmware.sources_sha256: String should match pattern "
        "'^[0-9a-f]{64}$'")
