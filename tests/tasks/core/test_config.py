"""The configuration boundary: params.yaml / farm.yaml -> frozen, validated models.

A bad file must raise ConfigError with ONE line that starts with the file path, names
the key path and says what is allowed. No TensorFlow/Keras is imported here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pydantic
import pytest

from tasks.core.config import (
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
from tasks.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(loader, path: Path, *fragments: str) -> str:
    """Load ``path``, expect a one-line ConfigError starting with the path and holding
    every fragment; return the message."""
    with pytest.raises(ConfigError) as caught:
        loader(path)
    message = str(caught.value)
    assert "\n" not in message, f"message is not one line: {message!r}"
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
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
    assert params.requirements.rank_by == "size_bytes"


def test_params_are_frozen(tmp_path: Path) -> None:
    params = load_params(write(tmp_path / "params.yaml", "train: {epochs: 3}\n"))
    with pytest.raises(pydantic.ValidationError):
        params.train.epochs = 5  # type: ignore[misc]
    assert params.train.epochs == 3


def test_loading_params_does_not_import_tensorflow_or_keras(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "model: {architecture: mobilenet_v2}\n")
    code = ("import sys; from pathlib import Path; from tasks.core.config import load_params; "
            f"load_params(Path({str(path)!r})); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------- bad params


def test_unknown_top_level_key_lists_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "trian: {epochs: 3}\n")
    message = config_error(load_params, path, "top level", "'trian'", "allowed")
    for key in ("benchmark", "convert", "data", "formats", "model", "requirements", "train"):
        assert key in message


def test_unknown_nested_key_names_section_and_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "train: {epoch: 3}\n")
    message = config_error(load_params, path, "train", "'epoch'", "allowed", "epochs")
    assert "batch_size" in message and "learning_rate" in message


def test_unknown_key_in_architecture_options_lists_that_architectures_keys(
        tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml",
                 "model: {architecture: small_cnn, width_multiplier: 1.0}\n")
    message = config_error(load_params, path, "model", "'width_multiplier'", "filters",
                           "dropout")
    # the discriminator tag is an implementation detail, never part of the key path
    assert "model.small_cnn" not in message


def test_wrong_type_names_key_path_and_expected_type(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "train: {epochs: many}\n")
    config_error(load_params, path, "train.epochs", "integer")


def test_out_of_range_value_names_key_path_and_bound(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "train: {epochs: 0}\n")
    config_error(load_params, path, "train.epochs", "must be an integer from 1 to 1000, got 0")


def test_out_of_range_image_size_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "data: {image_size: [4, 32]}\n")
    config_error(load_params, path, "data.image_size", "between 8 and 1024")


def test_several_errors_are_summarised_on_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "train: {epochs: 0, batch_size: 0}\n")
    config_error(load_params, path, "train.", "(+1 more)")


def test_unknown_architecture_lists_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "model: {architecture: resnet}\n")
    config_error(load_params, path, "model", "resnet", "small_cnn", "mobilenet_v2")


def test_unknown_format_lists_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "formats: {tensorrt: [fp32]}\n")
    config_error(load_params, path, "formats", "'tensorrt'", "allowed", "tflite", "onnx",
                 "openvino")


def test_unsupported_precision_lists_supported_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "formats: {onnx: [int4]}\n")
    config_error(load_params, path, "formats", "'onnx'", "'int4'", "supported: fp32")


def test_empty_format_matrix_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "formats: {}\n")
    config_error(load_params, path, "formats", "at least one format", "tflite")


def test_folder_source_without_folder_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "data: {source: folder}\n")
    config_error(load_params, path, "data", "data.folder", "required")


def test_folder_with_digits_source_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "data: {source: digits, folder: images}\n")
    config_error(load_params, path, "data", "data.folder", "only used")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "train: {epochs: 3}\nformats: [onnx\n")
    config_error(load_params, path, "not valid YAML", "(line 3)")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    config_error(load_params, tmp_path / "absent" / "params.yaml", "file not found")


def test_top_level_list_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "- train\n- epochs\n")
    config_error(load_params, path, "top level must be a mapping")


def test_top_level_scalar_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "just a string\n")
    config_error(load_params, path, "top level must be a mapping")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(b"train: {epochs: \xff\xfe}\n")
    config_error(load_params, path, "UTF-8")


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


@pytest.mark.parametrize("name", ["a; rm -rf /", "../escape", "-rf", "has space", "x" * 65,
                                  ".hidden", "$(reboot)"])
def test_hostile_device_name_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "farm.yaml"
    path.write_text(f"devices:\n  {name!r}: {{}}\n".replace("\"", "'"), encoding="utf-8")
    config_error(load_farm, path, "devices", f"device name {name!r}", "is not allowed",
                 "letters, digits")


def test_unknown_runtime_is_refused_listing_allowed(tmp_path: Path) -> None:
    path = write(tmp_path / "farm.yaml", "devices: {pi: {runtimes: [onnxruntime, tensorrt]}}\n")
    config_error(load_farm, path, "devices.pi.runtimes", "'tensorrt'", "allowed",
                 "onnxruntime", "openvino", "tflite")


def test_empty_devices_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "farm.yaml", "devices: {}\n")
    config_error(load_farm, path, "devices", "at least 1")


def test_missing_devices_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "farm.yaml", "")
    config_error(load_farm, path, "devices", "required")


def test_unknown_transport_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "farm.yaml", "devices: {pi: {transport: telnet}}\n")
    config_error(load_farm, path, "devices.pi.transport", "'local'")


def test_unknown_device_key_lists_allowed(tmp_path: Path) -> None:
    path = write(tmp_path / "farm.yaml", "devices: {pi: {thread: 2}}\n")
    config_error(load_farm, path, "devices.pi", "'thread'", "threads", "workdir")


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


def test_device_requirements_cannot_set_rank_by(tmp_path: Path) -> None:
    path = write(tmp_path / "farm.yaml",
                 "devices: {pi: {requirements: {rank_by: size_bytes}}}\n")
    config_error(load_farm, path, "devices.pi.requirements", "'rank_by'", "max_latency_p90_ms")


# --------------------------------------------------------------------------- issue 3 sections


@pytest.mark.parametrize("text, fragments", [
    ("optimize: {pruning: [{name: p, method: lottery, sparsity: 0.5}]}\n",
     ("optimize.pruning.0", "'lottery'", "'magnitude'", "'structured'")),
    ("optimize: {pruning: [{name: p, method: magnitude, sparsity: 1.5}]}\n",
     ("optimize.pruning.0.sparsity", "less than 1")),
    ("optimize: {pruning: [{name: p, method: structured}]}\n",
     ("optimize.pruning.0.ratio", "required")),
    ("optimize: {pruning: [{name: Bad Name, method: magnitude, sparsity: 0.5}]}\n",
     ("optimize.pruning.0.name", "not allowed")),
    ("optimize: {pruning: [{name: p, method: magnitude, sparsity: 0.5},"
     " {name: p, method: structured, ratio: 0.5}]}\n", ("optimize.pruning", "used twice")),
    ("optimize: {pruning: [{name: p, method: magnitude, sparsity: 0.5, ratio: 0.5}]}\n",
     ("optimize.pruning.0", "unknown key 'ratio'", "sparsity")),
    ("quantization: {onnx_calibration: kl}\n",
     ("quantization.onnx_calibration", "'minmax'", "'entropy'", "'percentile'")),
    ("quantization: {calibration_samples: 0}\n",
     ("quantization.calibration_samples", "must be an integer from 1 to 1000000, got 0")),
    ("formats: {tflm: [fp32]}\n", ("formats", "'tflm'", "supported: int8")),
    ("formats: {openvino: [int4]}\n", ("formats", "supported: fp32, fp16, bf16, int8, int8-acc")),
])
def test_bad_optimisation_and_quantisation_params(tmp_path: Path, text: str,
                                                  fragments: tuple[str, ...]) -> None:
    config_error(load_params, write(tmp_path / "params.yaml", text), *fragments)


def test_the_shipped_params_and_farm_parse() -> None:
    root = Path(__file__).resolve().parents[3]
    params = load_params(root / "params.yaml")
    assert {recipe.method for recipe in params.optimize.pruning} == {"magnitude", "structured"}
    assert params.formats["tflite"] == ["fp32", "fp16", "dynamic", "int8"]
    farm = load_farm(root / "farm.yaml")
    assert {device.transport for device in farm.devices.values()} == {"local", "mcu"}


@pytest.mark.parametrize("text, fragments", [
    ("devices: {esp: {transport: mcu, ram_kb: 512}}\n", ("devices.esp.flash_kb", "required")),
    ("devices: {esp: {transport: mcu, flash_kb: 4096, ram_kb: 512, threads: 2}}\n",
     ("devices.esp", "unknown key 'threads'", "flash_kb")),
    ("devices: {esp: {transport: mcu, flash_kb: 4096, ram_kb: 512, ram_margin: 1.0}}\n",
     ("devices.esp.ram_margin", "less than 1")),
])
def test_bad_mcu_profiles(tmp_path: Path, text: str, fragments: tuple[str, ...]) -> None:
    config_error(load_farm, write(tmp_path / "farm.yaml", text), *fragments)


def test_structured_pruning_of_an_unsupported_architecture_is_refused_at_load(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", """\
        model: {architecture: mobilenet_v2}
        optimize: {pruning: [{name: slim, method: structured, ratio: 0.5}]}
        """)
    config_error(load_params, path, "optimize.pruning.0", "small_cnn", "'mobilenet_v2'", "magnitude")


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


def test_ssh_device_without_known_hosts_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "farm.yaml",
                 "devices: {pi: {transport: ssh, host: h, user: u, key_file: k}}\n")
    config_error(load_farm, path, "devices.pi.known_hosts", "required")


SSH = "transport: ssh, host: 10.0.0.2, user: pi, key_file: k, known_hosts: kh"


@pytest.mark.parametrize("text, fragments", [
    (f"devices: {{pi: {{{SSH}, accelerators: {{onnxruntime_providers: [cuda]}}}}}}\n",
     ("devices.pi.accelerators.onnxruntime_providers", "'cuda'", "CUDAExecutionProvider")),
    (f"devices: {{pi: {{{SSH}, accelerators: {{openvino_device: 'CPU; reboot'}}}}}}\n",
     ("devices.pi.accelerators.openvino_device", "pattern")),
    (f"devices: {{pi: {{{SSH}, accelerators: {{tensorrt: true}}}}}}\n",
     ("devices.pi.accelerators", "unknown key 'tensorrt'", "onnxruntime_providers")),
    (f"devices: {{pi: {{{SSH}, keep_runs: 0}}}}\n", ("devices.pi.keep_runs", "must be an integer from 1 to 1000, got 0")),
    (f"devices: {{pi: {{{SSH}, connect_attempts: 0}}}}\n", ("devices.pi.connect_attempts",)),
    (f"devices: {{pi: {{{SSH}, setup: {{extra_packages: ['x; touch PWNED']}}}}}}\n",
     ("devices.pi.setup.extra_packages", "not a pip requirement")),
    (f"devices: {{pi: {{{SSH}, setup: {{venv: /opt}}}}}}\n",
     ("devices.pi.setup", "unknown key 'venv'", "wheelhouse")),
    (f"devices: {{pi: {{{SSH}, password: hunter2}}}}\n",
     ("devices.pi", "unknown key 'password'", "key_file")),
])
def test_bad_ssh_device_settings(tmp_path: Path, text: str, fragments: tuple[str, ...]) -> None:
    config_error(load_farm, write(tmp_path / "farm.yaml", text), *fragments)


def test_a_managed_device_runs_the_harness_in_its_venv(tmp_path: Path) -> None:
    farm = load_farm(write(tmp_path / "farm.yaml", f"""\
        devices:
          managed: {{{SSH}, workdir: ef, setup: {{}}}}
          plain: {{{SSH}, python: /opt/py/bin/python3}}
        """))
    assert farm.devices["managed"].harness_python() == "ef/venv/bin/python"
    assert farm.devices["plain"].harness_python() == "/opt/py/bin/python3"


# --------------------------------------------------------------------------- issue 9: bounds


@pytest.mark.parametrize("text, message", [
    # `.inf` and 1e10 once passed and overflowed a thread's timeout on every variant.
    ("benchmark: {timeout_seconds: .inf}\n",
     "benchmark.timeout_seconds: must be a number above 0 and at most 86400 (seconds), got inf"),
    ("benchmark: {timeout_seconds: 1e10}\n",
     "benchmark.timeout_seconds: must be a number above 0 and at most 86400 (seconds), "
     "got '1e10'"),  # PyYAML reads 1e10 (no dot) as a string; pydantic makes it a number
    ("benchmark: {timeout_seconds: .nan}\n",
     "benchmark.timeout_seconds: must be a number above 0 and at most 86400 (seconds), got nan"),
    ("benchmark: {lock_timeout_seconds: 86401}\n",
     "benchmark.lock_timeout_seconds: must be a number from 0 to 86400 (seconds), got 86401"),
    ("benchmark: {seconds: -1}\n",
     "benchmark.seconds: must be a number from 0 to 86400 (seconds), got -1"),
    ("benchmark: {warmup_seconds: .inf}\n",
     "benchmark.warmup_seconds: must be a number from 0 to 86400 (seconds), got inf"),
    ("benchmark: {runs: 1000000000000}\n",
     "benchmark.runs: must be an integer from 1 to 1000000, got 1000000000000"),
    ("benchmark: {runs: true}\n", "benchmark.runs: must be an integer from 1 to 1000000, got True"),
    ("benchmark: {warmup_runs: 1000001}\n",
     "benchmark.warmup_runs: must be an integer from 0 to 1000000, got 1000001"),
    ("benchmark: {accuracy_samples: 10000000}\n",
     "benchmark.accuracy_samples: must be an integer from 0 to 1000000, got 10000000"),
    ("convert: {check_samples: -1}\n",
     "convert.check_samples: must be an integer from 0 to 1000000, got -1"),
    ("convert: {max_abs_logit_diff: .inf}\n", "convert.max_abs_logit_diff: Input should be a finite number"),
    ("data: {calibration_size: 0}\n",
     "data.calibration_size: must be an integer from 1 to 1000000, got 0"),
    ("train: {seed: -1}\n", "train.seed: must be an integer from 0 to 4294967295, got -1"),
    ("data: {seed: 4294967296}\n",
     "data.seed: must be an integer from 0 to 4294967295, got 4294967296"),
    ("train: {early_stopping_patience: 100000}\n",
     "train.early_stopping_patience: must be an integer from 1 to 1000, got 100000"),
    ("model: {filters: [32, 100000]}\n", "model.filters.1: must be an integer from 1 to 1024, got 100000"),
    ("optimize: {pruning: [{name: p, method: magnitude, sparsity: 0.5, update_every: 0}]}\n",
     "optimize.pruning.0.update_every: must be an integer from 1 to 100000, got 0"),
    ("requirements: {max_latency_p90_ms: .inf}\n",
     "requirements.max_latency_p90_ms: must be a number above 0 and at most 86400000 (ms), got inf"),
    ("requirements: {max_peak_rss_mb: 0}\n",
     "requirements.max_peak_rss_mb: must be a number above 0 and at most 1048576 (MB), got 0"),
])
def test_every_duration_and_count_is_bounded_and_the_range_is_named(
        tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "params.yaml", text)
    assert config_error(load_params, path) == f"{path}: {message}"


@pytest.mark.parametrize("setting, message", [
    ("connect_timeout: .inf",
     "connect_timeout: must be a number above 0 and at most 86400 (seconds), got inf"),
    ("io_timeout: 1.0e+10",
     "io_timeout: must be a number above 0 and at most 86400 (seconds), got 10000000000.0"),
    ("keepalive_seconds: 3601", "keepalive_seconds: must be an integer from 1 to 3600 (seconds), got 3601"),
    ("connect_attempts: 21", "connect_attempts: must be an integer from 1 to 20, got 21"),
    ("retry_backoff_seconds: .inf",
     "retry_backoff_seconds: must be a number from 0 to 60 (seconds), got inf"),
    ("port: 70000", "port: must be an integer from 1 to 65535, got 70000"),
    ("threads: 0", "threads: must be an integer from 1 to 256, got 0"),
])
def test_ssh_device_durations_and_counts_are_bounded(tmp_path: Path, setting: str,
                                                     message: str) -> None:
    path = write(tmp_path / "farm.yaml", f"devices: {{pi: {{{SSH}, {setting}}}}}\n")
    assert config_error(load_farm, path) == f"{path}: devices.pi.{message}"


def test_mcu_memory_is_bounded(tmp_path: Path) -> None:
    path = write(tmp_path / "farm.yaml",
                 "devices: {esp: {transport: mcu, flash_kb: 4096, ram_kb: 10000000000}}\n")
    assert config_error(load_farm, path) == (
        f"{path}: devices.esp.ram_kb: must be an integer from 1 to 1048576, got 10000000000")


def test_the_upper_limits_themselves_are_allowed(tmp_path: Path) -> None:
    params = load_params(write(tmp_path / "params.yaml", """\
        benchmark: {timeout_seconds: 86400, lock_timeout_seconds: 86400, runs: 1000000}
        train: {seed: 4294967295}
        """))
    assert params.benchmark.timeout_seconds == 86400.0
    assert params.benchmark.runs == 1_000_000 and params.train.seed == 4294967295
    farm = load_farm(write(tmp_path / "farm.yaml",
                           f"devices: {{pi: {{{SSH}, connect_attempts: 20, io_timeout: 86400}}}}\n"))
    assert farm.devices["pi"].connect_attempts == 20 and farm.devices["pi"].io_timeout == 86400.0


# --------------------------------------------------------------------------- issue 9: duplicates


def test_a_key_written_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", """\
        formats: {onnx: [fp32]}
        train: {epochs: 3}
        formats: {tflite: [fp32]}
        """)
    assert config_error(load_params, path) == (
        f"{path}: key 'formats' appears twice (lines 1 and 3); YAML would keep only the last: "
        "remove one")


def test_a_nested_duplicate_in_the_farm_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "farm.yaml", """\
        devices:
          pi:
            threads: 2
            keep_runs: 3
            threads: 4
        """)
    assert config_error(load_farm, path) == (
        f"{path}: key 'threads' appears twice (lines 3 and 5); YAML would keep only the last: "
        "remove one")


def test_a_duplicate_on_one_line_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "train: {epochs: 3, epochs: 4}\n")
    config_error(load_params, path, "key 'epochs' appears twice (lines 1 and 1)")


def test_keys_merged_in_by_an_anchor_may_be_overridden(tmp_path: Path) -> None:
    path = write(tmp_path / "farm.yaml", """\
        devices:
          pi: &board {threads: 2, keep_runs: 3}
          pi2: {<<: *board, threads: 4}
        """)
    farm = load_farm(path)
    assert farm.devices["pi2"].threads == 4 and farm.devices["pi2"].keep_runs == 3


def test_params_folder_is_named_as_a_folder(tmp_path: Path) -> None:
    config_error(load_params, tmp_path, "is a folder, not a YAML file")


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
          bad: {{transport: ssh, host: h, user: u, key_file: absent, known_hosts: kh}}
        """)
    farm = load_farm(path)  # loading needs no key: `farm trust` and training run without one

    check_key_files(farm, ["here", "esp", "good"])
    with pytest.raises(ConfigError, match=r"^device 'bad': key_file .*/absent does not exist"):
        check_key_files(farm)
