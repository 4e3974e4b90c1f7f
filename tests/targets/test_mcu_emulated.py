"""A microcontroller whose core is emulated (farm.yaml ``target``): the latency estimate,
the fit decided on the target's arena and firmware (never the host's), the summary row's
fields and cells (the estimate marked, never a measured latency), a device whose
toolchain or sources are missing (skipped with the reason and the host's fit check), and,
marked ``arm``, the tiny model's tflm-int8 benchmarked end to end on a Nano 33 BLE-like
profile through the benchmark step."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.benchmark import benchmark_device
from tasks.config import BenchmarkParams, McuDevice, Requirements
from tasks.config.cores import CORES as PROFILES, estimated_latency_ms
from tasks.config.firmware import FirmwareSettings
from tasks.core.contracts.prepared import load_split, write_split
from tasks.core.contracts.results import McuOnTarget, read_result
from tasks.core.contracts.variants import VariantIndex, write_variant_index
from tasks.core.layout import Layout
from tasks.select.report.cells import row_cells
from tasks.select.report.terminal import compact_summary
from tasks.targets.firmware.library import CORES
from tasks.targets.firmware.settings import SOURCES_ENV
from tests.targets.test_mcu import CLASSES, project, tflm_variant
from tests.tasks.select.summaries import judge, summary_of

NANO = McuDevice(transport="mcu", flash_kb=1024, ram_kb=256, target="cortex-m4", clock_mhz=64)
# 100 KB flash with 10% margin (92,160 bytes), 40 KB RAM with half (20,480 bytes).
BUDGETS = {"flash_kb": 100, "ram_kb": 40, "flash_margin": 0.1, "ram_margin": 0.5}
FLASH_BUDGET, RAM_BUDGET = 92_160, 20_480


def test_every_emulated_core_has_a_tflm_build_for_its_board() -> None:
    assert set(PROFILES) == set(CORES)
    assert all(CORES[name].machine == profile.board for name, profile in PROFILES.items())


@pytest.mark.parametrize(("instructions", "cpi", "clock_mhz", "ms"), [
    (643_200, 1.25, 64, 12.5625),      # the tiny model on a Nano 33 BLE, the declared CPI
    (643_200, 2.5, 128, 12.5625),      # twice the cycles at twice the clock: the same
    (643_200, 1.25, 128, 6.28125),     # only the clock doubled: half
    (643_200, 1.5, 64, 15.075),        # only the CPI: in proportion
    (0, 1.25, 64, 0.0)])
def test_the_latency_estimate_is_instructions_times_cpi_over_the_clock(
        instructions: int, cpi: float, clock_mhz: float, ms: float) -> None:
    assert estimated_latency_ms(instructions, cpi, clock_mhz) == pytest.approx(ms, abs=1e-12)


def test_a_device_takes_its_cores_declared_cpi_unless_it_gives_its_own() -> None:
    assert NANO.cycles_per_instruction == PROFILES["cortex-m4"].cpi == 1.25
    assert NANO.model_copy(update={"cpi": 1.7}).cycles_per_instruction == 1.7
    assert McuDevice(transport="mcu", flash_kb=1, ram_kb=1).cycles_per_instruction is None


def target(arena_bytes: int = 4_000, text: int = 70_000, data: int = 4,
           instructions: int = 643_200, accuracy: float = 0.75) -> dict[str, Any]:
    """What a firmware run on the emulated core records."""
    return McuOnTarget(
        core="cortex-m4", board="mps2-an386", accuracy=accuracy, accuracy_samples=360,
        arena_bytes=arena_bytes, arena_used_bytes=arena_bytes - 12, firmware_text_bytes=text,
        firmware_data_bytes=data, instructions_per_inference=instructions,
        instruction_resolution=40, cpi=1.25, clock_mhz=64,
        estimated_latency_ms=estimated_latency_ms(instructions, 1.25, 64),
        sources_sha256="ab" * 32, compiler="arm-none-eabi-gcc 12.2").document()


def record(host_arena: int = 4_000, model_bytes: int = 20_000,
           on_target: dict[str, Any] | None = None) -> dict[str, Any]:
    """A tflm-int8 result on a device with the :data:`BUDGETS`, with target figures."""
    return {"variant": "tflm-int8", "device": "nano", "format": "tflm", "precision": "int8",
            "source": "base", "runtime": "tflm", "size_bytes": model_bytes, "sha256": None,
            "threads": None, "device_facts": {"class": "mcu"}, "status": "ok", "error": None,
            "mcu": {"model_bytes": model_bytes, "arena_bytes": host_arena,
                    "flash_bytes": 102_400, "ram_bytes": 40_960,
                    "flash_budget_bytes": FLASH_BUDGET, "ram_budget_bytes": RAM_BUDGET,
                    "accuracy": 0.8, "accuracy_samples": 40, "ops": ["CONV_2D"],
                    "target": on_target}}


LOOSE = Requirements(max_accuracy_drop=None)


def test_a_host_arena_within_budget_does_not_pass_a_target_arena_over_it() -> None:
    row = judge(record(host_arena=RAM_BUDGET, on_target=target(arena_bytes=RAM_BUDGET + 16)),
                LOOSE, 0.8)
    assert (row.status, row.reasons) == ("fail", [
        "tensor arena 20.0 KB on cortex-m4 > RAM budget 20.0 KB"])


def test_a_target_arena_within_budget_passes_where_the_host_arena_would_not() -> None:
    row = judge(record(host_arena=RAM_BUDGET + 16, on_target=target(arena_bytes=RAM_BUDGET)),
                LOOSE, 0.8)
    assert (row.status, row.reasons) == ("pass", [])
    # Without target figures the host's arena is what is checked, and it misses.
    assert judge(record(host_arena=RAM_BUDGET + 16), LOOSE, 0.8).reasons == [
        "tensor arena 20.0 KB > RAM budget 20.0 KB"]


def test_the_firmware_not_the_model_must_fit_the_flash_budget() -> None:
    # The model alone fits; the firmware (text + data) is 4 bytes over: only flash binds.
    over = judge(record(model_bytes=20_000, on_target=target(text=FLASH_BUDGET, data=4)),
                 LOOSE, 0.8)
    assert (over.status, over.reasons) == ("fail", [
        "firmware 90.0 KB (text + data on cortex-m4) > flash budget 90.0 KB"])
    exact = judge(record(on_target=target(text=FLASH_BUDGET - 4, data=4)), LOOSE, 0.8)
    assert (exact.status, exact.reasons) == ("pass", [])
    # Both over: both named, flash first.
    both = judge(record(on_target=target(arena_bytes=RAM_BUDGET + 16, text=FLASH_BUDGET + 1)),
                 LOOSE, 0.8)
    assert [reason.split()[0] for reason in both.reasons] == ["firmware", "tensor"]


def test_a_row_of_an_emulated_core_has_its_accuracy_and_an_estimated_latency_marked() -> None:
    row = judge(record(on_target=target(accuracy=0.75)),
                Requirements(max_accuracy_drop=None, max_latency_p90_ms=1), 0.8)
    # The target's accuracy on its 360 images, not the host's 0.8 on 40; a latency limit
    # of 1 ms is not applied to an estimate of 12.6 ms.
    assert (row.status, row.accuracy, row.accuracy_samples) == ("pass", 0.75, 360)
    assert row.accuracy_interval is not None and row.accuracy_drop == pytest.approx(0.0625)
    assert row.latency_ms is None and row.estimated_latency_ms == 12.5625
    assert row.runtime_version == "tflite-micro (cortex-m4, emulated)"
    cells = row_cells(row)
    assert cells[7:9] == ["~12.562 est", "~12.562 est"] and cells[9] == "—"
    assert "latency ~12.562 ms estimated, not measured: 643,200 instructions per inference " \
           "(counted in qemu) x 1.25 cycles per instruction / 64 MHz" in row.remarks()
    assert "firmware 68.4 of 90 KB flash budget (text + data), arena 3.9 of 20 KB RAM " \
           "budget (the host measured 3.9)" in row.remarks()
    from rich.console import Console
    console = Console(width=100, record=True)
    for renderable in compact_summary(summary_of([row], {"nano": "tflm-int8"})):
        console.print(renderable)
    assert "~12.562 est" in console.export_text()


def test_a_device_without_a_target_says_it_has_no_emulator_for_its_core() -> None:
    without = record()
    without["mcu"]["not_emulated"] = "no emulator here for its core (xtensa-lx7): ..."
    row = judge(without, LOOSE, 0.8)
    assert row.estimated_latency_ms is None and row_cells(row)[7:9] == ["—", "—"]
    assert row.runtime_version == "tflite-micro (host)"
    assert row.notes[0].endswith("latency needs the board; no emulator here for its core "
                                 "(xtensa-lx7): ...")


def test_the_probe_of_an_emulated_profile_names_its_core_emulator_and_clock() -> None:
    from tasks.targets.mcu import McuTarget

    probe = McuTarget("nano", NANO).probe()
    assert probe.facts == {"class": "mcu", "flash_kb": 1024, "ram_kb": 256, "core": "cortex-m4",
                           "emulator": "qemu-system-arm -M mps2-an386", "clock_mhz": 64.0}


def mcu_project(tmp_path: Path) -> Layout:
    """A layout with one hand-made tflm variant (and one onnx), and a test split."""
    variant = tflm_variant()
    layout = project(tmp_path, variant)
    other = variant.model_copy(update={"name": "onnx-fp32", "format": "onnx",
                                       "runtime": "onnxruntime"})
    write_variant_index(layout.variants, VariantIndex(reference_accuracy=0.8, sources={},
                                                      variants=[variant, other]))
    write_split(layout.prepared, "test", np.zeros((4, 32, 32, 1), np.float32),
                np.arange(4) % len(CLASSES))
    return layout


def test_missing_sources_skip_every_tflm_variant_with_the_reason_and_the_host_fit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SOURCES_ENV, raising=False)
    layout = mcu_project(tmp_path)
    params = BenchmarkParams(firmware=FirmwareSettings(sources=tmp_path / "nowhere"))
    run = benchmark_device("nano", NANO.model_copy(update=BUDGETS), params, layout.variants,
                           layout.prepared, tmp_path / "results" / "nano")
    results = {path.stem: read_result(path) for path in run.results}
    skipped = results["tflm-int8"]
    assert skipped.status == "skipped" and skipped.mcu is not None
    assert skipped.mcu.target is None and skipped.mcu.not_emulated is not None
    # Where the toolchain is here, the sources are what is missing (else the toolchain).
    assert skipped.error is not None and skipped.error.startswith(
        "not run on the emulated cortex-m4: ")
    assert "\n" not in skipped.error
    assert ("nowhere is not a folder" in skipped.error or "not found" in skipped.error)
    assert skipped.error.endswith("; host fit check: model 19.5 of 90 KB flash budget, arena "
                                  "5.9 of 20 KB RAM budget, accuracy 0.8000 (TFLite Micro on "
                                  "the host)")
    assert results["onnx-fp32"].status == "skipped"
    assert skipped.device_facts == {"class": "mcu", "core": "cortex-m4", "board": "mps2-an386",
                                    "clock_mhz": 64.0}
    row = judge(json.loads((tmp_path / "results" / "nano" / "tflm-int8.json").read_text()),
                LOOSE, 0.8)
    assert row.status == "skipped" and row.reasons == [skipped.error]


def test_sources_other_than_the_pinned_ones_skip_with_both_digests(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.targets.firmware import measure

    sources = tmp_path / "sources"
    sources.mkdir()
    monkeypatch.setattr(measure, "sources_key", lambda folder: "cd" * 32)
    reason = measure.missing_prerequisites(FirmwareSettings(sources=sources,
                                                            sources_sha256="ab" * 32))
    if measure.missing_prerequisites(FirmwareSettings(sources=sources)) is not None:
        pytest.skip("no firmware toolchain or emulator here: the pin is checked after them")
    assert reason == (f"firmware sources: the archives in {sources} have digest {'cd' * 32}, "
                      f"not the {'ab' * 32} benchmark.firmware.sources_sha256 pins (other "
                      "TFLite Micro sources: pin theirs, or point sources at the pinned ones)")


def test_the_shipped_pin_is_the_digest_of_the_third_party_archives(
        firmware_settings: FirmwareSettings) -> None:
    from tasks.config import load_params
    from tasks.targets.firmware.sources import sources_key

    shipped = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    assert shipped.benchmark.firmware.sources_sha256 == sources_key(firmware_settings.sources)


# ---------------------------------------------------------------- end to end (arm)


def host_tflm_accuracy(model: bytes, inputs: np.ndarray, labels: np.ndarray) -> float:
    """The host TFLite Micro interpreter (reference kernels) on the same int8 inputs."""
    from tflite_micro.python.tflite_micro import runtime as tflm

    interpreter = tflm.Interpreter.from_bytes(model)
    shape = interpreter.get_input_details(0)["shape"]
    correct = 0
    for row, label in zip(inputs, labels):
        interpreter.set_input(row.reshape(shape), 0)
        interpreter.invoke()
        correct += int(np.argmax(interpreter.get_output(0))) == int(label)
    return correct / len(labels)


@pytest.mark.arm
def test_the_tiny_tflm_variant_benchmarked_on_an_emulated_nano_33_ble(
        tflm_bundle: tuple[Path, Path], firmware_settings: FirmwareSettings, m4_library: Any,
        tmp_path: Path) -> None:
    from tasks.targets.firmware.measure import bundle_inputs

    bundle, prepared = tflm_bundle
    layout = Layout(bundle.parents[2])
    device = McuDevice(transport="mcu", flash_kb=1024, ram_kb=256, target="cortex-m4",
                       clock_mhz=64, cpi=1.3)
    run = benchmark_device("nano33-ble", device, BenchmarkParams(firmware=firmware_settings),
                           layout.variants, prepared, tmp_path / "results" / "nano33-ble")
    result = read_result(tmp_path / "results" / "nano33-ble" / "tflm-int8.json")
    assert run.results and result.status == "ok", result.error
    assert result.mcu is not None and result.mcu.target is not None
    on = result.mcu.target
    images, labels = load_split(prepared, "test")
    host = host_tflm_accuracy((bundle / "model.tflite").read_bytes(),
                              bundle_inputs(bundle, images), labels)
    assert on.accuracy_samples == len(labels) > 100
    assert abs(on.accuracy - host) <= 1 / len(labels)
    assert on.arena_bytes > 0 and on.instructions_per_inference > 0
    assert on.estimated_latency_ms == on.instructions_per_inference * 1.3 / (64 * 1000)
    assert on.firmware_flash_bytes > result.mcu.model_bytes
    assert len(on.sources_sha256) == 64 and on.compiler.startswith("arm-none-eabi-gcc")
    row = judge(result.document(), Requirements(max_accuracy_drop=None), host)
    assert row.accuracy == on.accuracy and row.estimated_latency_ms == on.estimated_latency_ms
    assert row_cells(row)[8] == f"~{on.estimated_latency_ms:.3f} est"
    print(f"\nnano33-ble-like row: {' | '.join(row_cells(row))}\n  {row.remarks()}")


def test_newlib_missing_for_the_core_is_named_with_its_package(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiler prints a library it cannot find as its bare name."""
    import subprocess

    from tasks.core.errors import StepError
    from tasks.targets.firmware import library

    def printed(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        name = command[-1].removeprefix("-print-file-name=")
        found = "/usr/lib/x/" + name if name == "libc_nano.a" else name
        return subprocess.CompletedProcess(command, 0, found + "\n", "")

    monkeypatch.setattr(library.subprocess, "run", printed)
    with pytest.raises(StepError, match=r"^firmware: libstdc\+\+_nano.a for cortex-m4 not found: "
                                        r"install Debian's libstdc\+\+-arm-none-eabi-newlib$"):
        library.require_newlib(CORES["cortex-m4"])


def test_a_detectors_row_on_an_emulated_core_shows_the_targets_own_interval() -> None:
    """The firmware run's interval (the detection kind's bootstrap over the images the
    target ran) goes into the target's figures and is the row's; a run without one (a
    classifier's) leaves the record as it was and the row's interval binomial."""
    from types import SimpleNamespace

    from tasks.core.accuracy import accuracy_interval
    from tasks.targets.mcu_emulated import on_target
    from tests.targets.test_mcu_release import firmware_run

    built = SimpleNamespace(sources_sha256="ab" * 32, compiler="arm-none-eabi-gcc 12.2")
    run = firmware_run([0] * 40)
    detector = on_target(replace(run, accuracy=0.3125, accuracy_interval=[0.21, 0.43]), NANO,
                         built)  # type: ignore[arg-type]
    assert detector.accuracy_interval == [0.21, 0.43]
    row = judge(record(on_target=detector.document()), LOOSE, 0.8)
    assert (row.accuracy, row.accuracy_interval) == (0.3125, [0.21, 0.43])

    classifier = on_target(replace(run, accuracy=0.75), NANO, built)  # type: ignore[arg-type]
    assert "accuracy_interval" not in classifier.document()
    row = judge(record(on_target=classifier.document()), LOOSE, 0.8)
    assert row.accuracy_interval == list(accuracy_interval(0.75, 40))
