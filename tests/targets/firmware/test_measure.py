"""The tiny model's tflm bundle built into a real firmware (TFLM + CMSIS-NN, Cortex-M4F,
arm-none-eabi-gcc) and run on qemu's mps2-an386 over the whole test split: its accuracy is
host TFLM's within one image, the arena it used on the target and its instruction count
are recorded, and a second run gives exactly the same figures; a tiny detector's firmware
scores the host int8 run's mAP from its whole output grid, decoded on the host. Marked
``arm`` (run by `make test-arm`): the first run on a machine builds the TFLM library
(minutes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.core.contracts.prepared import load_split
from tasks.core.errors import ConfigError, StepError
from tasks.targets.firmware.build import build_firmware
from tasks.targets.firmware.library import CORES
from tasks.targets.firmware.measure import bundle_inputs, measure_bundle
from tasks.targets.firmware.run import run_firmware
from tasks.targets.firmware.settings import FirmwareSettings

pytestmark = pytest.mark.arm


def host_predictions(bundle: Path, inputs: np.ndarray) -> np.ndarray:
    """The host TFLite Micro interpreter (reference kernels) on the same int8 inputs."""
    from tflite_micro.python.tflite_micro import runtime as tflm

    interpreter = tflm.Interpreter.from_bytes((bundle / "model.tflite").read_bytes())
    shape = interpreter.get_input_details(0)["shape"]
    predictions = []
    for row in inputs:
        interpreter.set_input(row.reshape(shape), 0)
        interpreter.invoke()
        predictions.append(int(np.argmax(interpreter.get_output(0))))
    return np.asarray(predictions)


def test_the_firmware_on_an_emulated_cortex_m4_agrees_with_host_tflm_and_counts_stably(
        tflm_bundle: tuple[Path, Path], firmware_settings: FirmwareSettings,
        m4_library: Any, tmp_path: Path) -> None:
    bundle, prepared = tflm_bundle
    images, labels = load_split(prepared, "test")
    first = measure_bundle(bundle, images, labels, tmp_path / "first", firmware_settings)
    host = host_predictions(bundle, bundle_inputs(bundle, images))
    assert first.images == len(labels) > 100
    assert abs(first.accuracy - float(np.mean(host == labels))) <= 1 / len(labels)
    assert first.accuracy > 0.5
    # The arena measured on the 32-bit target, and the one the bundle declares (host's):
    # here more than the target needs (its pointers take 4 bytes, not 8).
    declared = json.loads((bundle / "manifest.json").read_text())["arena_bytes"]
    assert first.declared_arena_bytes == declared and first.declared_arena_fits
    assert first.arena_needed_bytes >= first.arena_used_bytes > 0
    assert first.instructions_per_tick == 40 and first.instructions_per_inference > 10_000
    assert all(count > 0 for count in first.instructions)
    model_bytes = (bundle / "model.tflite").stat().st_size
    assert first.text_bytes > model_bytes
    assert first.flash_bytes == first.text_bytes + first.data_bytes

    second = measure_bundle(bundle, images, labels, tmp_path / "second", firmware_settings)
    assert second.instructions == first.instructions
    assert second.scores == first.scores and second.arena_used_bytes == first.arena_used_bytes
    assert (second.text_bytes, second.data_bytes) == (first.text_bytes, first.data_bytes)


def test_the_arena_found_on_the_target_is_the_smallest_that_allocates(
        tflm_bundle: tuple[Path, Path], m4_library: Any, tmp_path: Path) -> None:
    """Given exactly the arena it found as its whole buffer, the firmware runs; given 16
    bytes less, it cannot allocate the model."""
    bundle, prepared = tflm_bundle
    images, _ = load_split(prepared, "test")
    inputs = bundle_inputs(bundle, images[:2])
    found = run_firmware(build_firmware(bundle, m4_library, CORES["cortex-m4"], tmp_path / "big"),
                         "mps2-an386", inputs, tmp_path / "big-run")
    needed = found.arena_needed_bytes
    exact = build_firmware(bundle, m4_library, CORES["cortex-m4"], tmp_path / "exact",
                           arena_bytes=needed)
    assert run_firmware(exact, "mps2-an386", inputs, tmp_path / "exact-run").scores == found.scores
    less = build_firmware(bundle, m4_library, CORES["cortex-m4"], tmp_path / "less",
                          arena_bytes=needed - 16)
    with pytest.raises(StepError, match="allocate: the tensors do not fit the whole arena buffer"):
        run_firmware(less, "mps2-an386", inputs, tmp_path / "less-run")


def test_a_host_arena_too_small_for_the_target_is_caught(firmware_settings: FirmwareSettings,
                                                         m4_library: Any, tmp_path: Path) -> None:
    """A MobileNetV3Small (alpha 0.75) at 32x32: the arena the host TFLM interpreter
    allocates it in, which its bundle declares, is too small on the Cortex-M4 (issue 29's
    ESP32 bundle failed the same way); its scores there still equal the host's."""
    from tests.cortex_m import bundle_of
    from tests.model_files import mobilenet_v3
    from tests.tasks.models.test_tflm import _int8_tflite

    model = _int8_tflite(mobilenet_v3(tmp_path / "mnv3.keras"))
    bundle = bundle_of(model, tmp_path / "bundle", [32, 32, 3])
    images = np.random.default_rng(0).random((3, 32, 32, 3), np.float32)
    run = measure_bundle(bundle, images, None, tmp_path / "work", firmware_settings)
    assert run.declared_arena_bytes < run.arena_needed_bytes and not run.declared_arena_fits
    host = host_predictions(bundle, bundle_inputs(bundle, images))
    assert list(host) == list(run.predictions)


def test_inputs_of_another_size_are_the_harness_error_in_one_line(
        tflm_bundle: tuple[Path, Path], m4_library: Any, tmp_path: Path) -> None:
    bundle, _ = tflm_bundle
    firmware = build_firmware(bundle, m4_library, CORES["cortex-m4"], tmp_path / "build")
    with pytest.raises(StepError) as raised:
        run_firmware(firmware, "mps2-an386", np.zeros((3, 100), np.int8), tmp_path / "run")
    assert "\n" not in str(raised.value)
    assert "the harness failed: inputs: inputs.bin is not a whole number of input tensors" in str(
        raised.value)


def test_an_emulator_that_runs_too_long_is_stopped(
        tflm_bundle: tuple[Path, Path], m4_library: Any, tmp_path: Path) -> None:
    bundle, _ = tflm_bundle
    firmware = build_firmware(bundle, m4_library, CORES["cortex-m4"], tmp_path / "build")
    with pytest.raises(StepError, match=r"ran past 0.01 s on 1 images"):
        run_firmware(firmware, "mps2-an386", np.zeros((1, 256), np.int8), tmp_path / "run",
                     timeout=0.01)


def test_a_bundle_without_model_data_cc_fails_before_any_build(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model_data.h").write_text("#pragma once\n")
    with pytest.raises(StepError) as raised:
        measure_bundle(bundle, np.zeros((1, 16, 16, 1)), None, tmp_path / "work",
                       FirmwareSettings(sources=tmp_path / "nowhere"))
    assert "\n" not in str(raised.value) and "lacks model_data.cc" in str(raised.value)


def test_a_missing_sources_folder_is_one_line(tflm_bundle: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    bundle, prepared = tflm_bundle
    images, labels = load_split(prepared, "test")
    with pytest.raises(ConfigError) as raised:
        measure_bundle(bundle, images[:2], labels[:2], tmp_path / "work",
                       FirmwareSettings(sources=tmp_path / "nowhere", cache=tmp_path / "cache"))
    assert "\n" not in str(raised.value) and "is not a folder" in str(raised.value)
    assert not (tmp_path / "cache").exists()


# A tiny detector at 96x96 (a 12x12 grid of 10 digit classes), as convert's spec says
# its outputs are decoded.
DETECTION_ENTRIES = {"task": "detection", "detection": {
    "format": "grid", "classes": 10, "grid": 12, "score_threshold": 0.25, "iou_threshold": 0.45,
    "max_detections": 100}}


def detector_bundle(folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """(bundle, scenes, their boxes): a tiny detector trained a few epochs on synthetic
    scenes, converted to full int8 and written as a tflm bundle whose spec says how its
    grid is decoded; the scenes are some it trained on (the plumbing is tested here, not
    generalisation: its mAP on them is well above 0)."""
    from tasks.config import TrainParams
    from tasks.models.architectures import TinyDetectorOptions, build_model
    from tasks.models.formats.tflite import convert_tflite
    from tasks.models.seeding import seed_training
    from tasks.train.detection import fit_detector
    from tests.cortex_m import bundle_of
    from tests.tasks.train.test_detection import _scenes

    train = _scenes(64, seed=21)
    seed_training(0)
    # About 45 s here: 40 epochs of 64 scenes take it to a mAP@0.5 of about 0.2 on them.
    model = build_model(TinyDetectorOptions(width_multiplier=0.35), (96, 96, 3), 10)
    fit_detector(model, TrainParams(epochs=40, batch_size=16, learning_rate=3e-3,
                                    early_stopping_patience=50), {"train": train, "val": train},
                 10)
    model.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    bundle = bundle_of(convert_tflite(folder / "saved_model", "int8", train[0][:64]),
                       folder / "bundle", [96, 96, 3])
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["spec"].update(DETECTION_ENTRIES)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle, train[0][:10], train[1][:10]


def test_a_detector_on_an_emulated_cortex_m4_scores_the_host_int8_runs_map(
        firmware_settings: FirmwareSettings, m4_library: Any, tmp_path: Path) -> None:
    """The detector's firmware (TFLM + CMSIS-NN) on a few scenes: its whole output grid
    comes back, de-quantised exactly as the host de-quantises (the same values give the
    same floats), decoded and scored by the detection kind on the host; its mAP@0.5 is
    the host LiteRT int8 run's on the same images within a small tolerance (the same
    int8 arithmetic, kernels that may round one step apart), with the kind's bootstrap
    interval; and it fits the Cortex-M4 profile's budgets."""
    from tasks.config import McuDevice
    from tasks.core.accuracy import wilson_interval
    from tasks.device import runtimes, tensors
    from tasks.device.kinds import detection
    from tasks.targets.mcu_release import limits_of

    bundle, images, labels = detector_bundle(tmp_path)
    spec = json.loads((bundle / "manifest.json").read_text())["spec"]
    run = measure_bundle(bundle, images, labels, tmp_path / "work", firmware_settings)

    runner = runtimes.load_runner("tflite", str(bundle / "model.tflite"), 1, {})
    host_raw = np.stack([np.asarray(runner.infer(tensors.quantize_input(image, spec["input"])))
                         .reshape(-1) for image in images])
    target_raw = np.asarray(run.scores)
    assert target_raw.shape == host_raw.shape == (10, 12 * 12 * 15)
    # CMSIS-NN's kernels and LiteRT's round some requantisations a step apart, and the
    # steps add up over the layers: the grids agree closely, not bit for bit.
    steps = np.abs(target_raw.astype(int) - host_raw.astype(int))
    print(f"\nint8 output steps apart, target vs host: mean {steps.mean():.3f}, max "
          f"{steps.max()}, equal {np.mean(steps == 0):.3f}")
    assert steps.mean() < 1.5
    host_outputs = np.stack([tensors.dequantize_output(row, spec["output"]) for row in host_raw])
    target_outputs = run.outputs(spec["output"])
    # De-quantised as the host does: equal int8 values give bit-equal floats, and every
    # value is its int8 one on the spec's scale.
    same = steps == 0
    assert same.any() and np.array_equal(target_outputs[same], host_outputs[same])
    scale, zero = spec["output"]["quantization"]["scale"], spec["output"]["quantization"]["zero_point"]
    assert np.array_equal(target_outputs, ((target_raw.astype(np.float32) - zero)
                                           * np.float32(scale)).astype(np.float32))

    host_records = detection.KIND.per_sample(
        [detection.KIND.decode(row, spec) for row in host_outputs], labels)
    host_map = detection.KIND.metric(host_records)
    print(f"\nemulated Cortex-M4 mAP@0.5 {run.accuracy:.4f} {run.accuracy_interval}, host "
          f"LiteRT int8 {host_map:.4f}; arena {run.arena_needed_bytes} B, flash "
          f"{run.flash_bytes} B, {run.instructions_per_inference} instructions per image")
    assert host_map > 0.1
    assert abs(run.accuracy - host_map) <= 0.02
    records = detection.KIND.per_sample(list(run.predictions), labels)
    assert run.accuracy == detection.KIND.metric(records)
    assert run.accuracy_interval == [float(b) for b in detection.KIND.interval(records)]
    assert run.accuracy_interval != list(wilson_interval(round(run.accuracy * 10), 10))
    # The default farm's nano33-ble (nRF52840: 1 MB flash, 256 KB RAM, default margins).
    budget = limits_of(McuDevice(transport="mcu", flash_kb=1024, ram_kb=256), None)
    assert run.arena_needed_bytes <= budget.ram_budget_bytes, (run.arena_needed_bytes, budget)
    assert run.flash_bytes <= budget.flash_budget_bytes, (run.flash_bytes, budget)
