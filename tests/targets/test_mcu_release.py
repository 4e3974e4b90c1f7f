"""tasks.targets.mcu_release: the release check of a microcontroller whose core is emulated.
On hand-made figures: each limit met exactly passes and one unit past it refuses with
its own one-line reason; the accuracy judged by the board health check's rule. Through
``McuTarget.release`` with the firmware's build and run replaced by a fake (no toolchain
needed): a pass keeps the image in the bundle with its sha256 in the manifest and the
state, a refusal or a failed build removes the bundle and the record keeps its current
release, missing prerequisites release a source bundle labelled unverified, and a device
without ``target`` is released as before. Marked ``arm``: the tiny model's tflm-int8
released end to end to a Nano 33 BLE-like device through the release step."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.config import McuDevice, ReleaseParams
from tasks.config.firmware import FirmwareSettings
from tasks.core.contracts.prepared import write_split
from tasks.core.contracts.release import (ReleaseDecision, ReleaseOutcome, ReleaseStatus,
                                          read_record, write_record)
from tasks.core.errors import StepError
from tasks.core.layout import Layout
from tasks.targets import mcu, mcu_release
from tasks.targets.base import ReleaseJob
from tasks.targets.firmware.run import FirmwareRun
from tasks.targets.mcu_release import FirmwareFigures, FirmwareLimits, firmware_reasons
from tests.targets.test_mcu import CLASSES, OLD_IDS, project, tflm_variant

# 100 KB flash with 10% margin (92,160 bytes), 40 KB RAM with half (20,480 bytes).
NANO = McuDevice(transport="mcu", flash_kb=100, ram_kb=40, flash_margin=0.1, ram_margin=0.5,
                 target="cortex-m4", clock_mhz=64)
FLASH_BUDGET, RAM_BUDGET = 92_160, 20_480
LIMITS = FirmwareLimits(accuracy_floor=0.8, ram_budget_bytes=RAM_BUDGET,
                        flash_budget_bytes=FLASH_BUDGET)
OLD = {"release": "20240101T000000000000Z-tflm-old", "variant": "tflm-old", "sha256": "cd" * 32}


def figures(**changed: Any) -> FirmwareFigures:
    """Figures exactly at every limit of :data:`LIMITS`."""
    fields: dict[str, Any] = dict(
        core="cortex-m4", board="mps2-an386", images=50, accuracy=0.7, accuracy_upper=0.8,
        arena_bytes=RAM_BUDGET, arena_used_bytes=RAM_BUDGET - 12,
        declared_arena_bytes=RAM_BUDGET, flash_bytes=FLASH_BUDGET,
        instructions_per_inference=643_200, cpi=1.25, clock_mhz=64.0,
        estimated_latency_ms=12.5625)
    return FirmwareFigures(**{**fields, **changed})


def test_figures_exactly_at_every_limit_pass() -> None:
    assert firmware_reasons(figures(), LIMITS) == []
    assert firmware_reasons(figures(accuracy_upper=0.0),
                            FirmwareLimits(None, RAM_BUDGET, FLASH_BUDGET)) == []


@pytest.mark.parametrize("changed, reason", [
    ({"accuracy_upper": 0.799}, "accuracy 0.700 on the emulated cortex-m4 on 50 check images "
                                "(95% upper bound 0.799) is below the floor 0.800"),
    ({"arena_bytes": RAM_BUDGET + 1, "declared_arena_bytes": RAM_BUDGET + 16},
     "tensor arena 20,481 bytes on the emulated cortex-m4 > RAM budget 20,480 bytes"),
    ({"declared_arena_bytes": RAM_BUDGET - 1},
     "tensor arena 20,480 bytes needed on the emulated cortex-m4 > kTensorArenaSize 20,479 "
     "bytes declared in model_data.h"),
    ({"flash_bytes": FLASH_BUDGET + 1},
     "firmware 92,161 bytes (text + data on the emulated cortex-m4) > flash budget 92,160 "
     "bytes"),
])
def test_each_figure_past_its_limit_is_named_with_the_limit(changed: dict[str, Any],
                                                            reason: str) -> None:
    assert firmware_reasons(figures(**changed), LIMITS) == [reason]


def test_every_figure_past_its_limit_is_named_in_order() -> None:
    reasons = firmware_reasons(figures(accuracy_upper=0.5, arena_bytes=RAM_BUDGET + 16,
                                       flash_bytes=FLASH_BUDGET + 1), LIMITS)
    assert [reason.split()[0] for reason in reasons] == ["accuracy", "tensor", "tensor",
                                                         "firmware"]


def test_the_budgets_are_the_fit_checks() -> None:
    assert mcu_release.limits_of(NANO, 0.5) == FirmwareLimits(0.5, RAM_BUDGET, FLASH_BUDGET)


def firmware_run(predictions: list[int], arena: int = 4_000, declared: int = 6_000,
                 text: int = 70_000, data: int = 4,
                 instructions: tuple[int, ...] = (643_200,)) -> FirmwareRun:
    """What the firmware on the emulated core gives for the given predictions."""
    return FirmwareRun(
        core="cortex-m4", machine="mps2-an386", scores=tuple((0,) for _ in predictions),
        output_scale=1.0, output_zero_point=0, predictions=tuple(predictions), accuracy=None,
        arena_needed_bytes=arena, arena_used_bytes=arena - 12, declared_arena_bytes=declared,
        instructions=instructions * len(predictions), instructions_per_tick=40,
        text_bytes=text, data_bytes=data, bss_bytes=8, wall_seconds=1.0)


def test_the_accuracy_is_judged_by_its_upper_bound_as_a_boards_health_check() -> None:
    """37 of 41 right is 0.902 with a Wilson 95% one-sided upper bound of 0.955: a floor
    of 0.95 passes it (41 images cannot tell 0.90 from 0.95), 0.96 does not."""
    labels = np.zeros(41, dtype=np.int64)
    found = mcu_release.figures_of(firmware_run([0] * 37 + [1] * 4), labels, NANO, {})
    assert found.images == 41 and found.accuracy == pytest.approx(37 / 41)
    assert found.accuracy_upper == pytest.approx(0.95545, abs=1e-5)
    assert firmware_reasons(found, FirmwareLimits(0.95, RAM_BUDGET, FLASH_BUDGET)) == []
    assert firmware_reasons(found, FirmwareLimits(0.96, RAM_BUDGET, FLASH_BUDGET))[0].startswith(
        "accuracy 0.902 on the emulated cortex-m4 on 41 check images")
    assert (found.flash_bytes, found.arena_bytes, found.declared_arena_bytes) == (
        70_004, 4_000, 6_000)
    assert found.estimated_latency_ms == 643_200 * 1.25 / 64_000


# ------------------------------------------------ the release, with a fake firmware


ELF = b"\x7fELF fake firmware image"


def mcu_layout(tmp_path: Path, images: int = 20) -> Layout:
    """One tflm variant's bundle files, and a test split of ``images`` labelled 0, 1, 2..."""
    layout = project(tmp_path, tflm_variant())
    write_split(layout.prepared, "test", np.zeros((images, 32, 32, 1), np.float32),
                np.arange(images) % len(CLASSES))
    write_record(layout, ReleaseDecision(
        ReleaseOutcome("nano", ReleaseStatus.RELEASED, "tflm-old", OLD["release"], "then"),
        dict(OLD), None))  # type: ignore[arg-type]
    (layout.device_releases("nano") / OLD["release"]).mkdir(parents=True)
    return layout


def job(layout: Layout, floor: float | None = 0.5, check_images: int = 12,
        keep: int = 5) -> ReleaseJob:
    def no_board(entry: Any) -> ReleaseDecision:
        raise AssertionError("a microcontroller has no board to release on")

    return ReleaseJob(layout=layout, params=ReleaseParams(check_images=check_images, keep=keep),
                      variant=tflm_variant(), register=lambda: {"name": "m", "version": 3},
                      alias_moved=lambda mlflow: "", on_board=no_board,
                      firmware=FirmwareSettings(sources=Path("/nowhere")),
                      accuracy_floor=lambda: floor)


@pytest.fixture
def fake_firmware(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The firmware's build and run replaced: ``seen`` records what was run (images,
    labels, the bundle), ``run`` is what it gives (set by the test, default: every
    image right)."""
    seen: dict[str, Any] = {"run": None}

    def run_bundle(bundle: Path, images: np.ndarray, labels: np.ndarray, work: Path,
                   built: Any, timeout: float) -> FirmwareRun:
        seen.update(bundle=bundle, images=len(images), labels=list(labels), timeout=timeout)
        (work / "build").mkdir(parents=True)
        (work / "build" / "firmware.elf").write_bytes(ELF)
        return seen["run"] or firmware_run([int(label) for label in labels])

    class Built:
        sources_sha256, compiler = "ab" * 32, "arm-none-eabi-gcc 12.2"

    monkeypatch.setattr(mcu_release, "missing_prerequisites", lambda settings, core: None)
    monkeypatch.setattr(mcu_release, "toolchain", lambda settings, core, jobs: Built())
    monkeypatch.setattr(mcu_release, "run_bundle", run_bundle)
    monkeypatch.setattr(mcu_release, "objcopy_tool", lambda: None)
    return seen


def released(layout: Layout, decision: ReleaseDecision) -> dict[str, Any]:
    """The decision recorded as the release step records it; the record."""
    write_record(layout, decision)
    return dict(read_record(layout, "nano"))


def test_a_firmware_that_passes_is_kept_in_the_bundle_with_its_sha256_and_figures(
        tmp_path: Path, fake_firmware: dict[str, Any]) -> None:
    layout = mcu_layout(tmp_path)
    decision = mcu.McuTarget("nano", NANO).release(job(layout, floor=0.5, check_images=12))
    outcome = decision.outcome
    assert outcome.status is ReleaseStatus.RELEASED, outcome.message
    folder = layout.device_releases("nano") / str(outcome.release_id)
    # The release's check images: the first release.check_images of the test split.
    assert fake_firmware["images"] == 12 and fake_firmware["labels"] == [0, 1, 2] * 4
    assert fake_firmware["bundle"] == folder and fake_firmware["timeout"] == 300.0
    digest = hashlib.sha256(ELF).hexdigest()
    assert (folder / "firmware.elf").read_bytes() == ELF
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["firmware"]["elf"] == {"path": "firmware.elf", "sha256": digest,
                                           "bytes": len(ELF)}
    assert manifest["firmware"]["bin"] is None
    assert "firmware.elf" in manifest["files"]
    state = decision.current
    assert state is not None and state["firmware"] == manifest["firmware"]
    assert decision.previous == OLD
    firmware = state["firmware"]
    assert {key: firmware[key] for key in (
        "built", "verified", "images", "accuracy", "arena_bytes", "declared_arena_bytes",
        "flash_bytes", "instructions_per_inference", "estimated_latency_ms", "accuracy_floor",
        "ram_budget_bytes", "flash_budget_bytes", "sources_sha256")} == {
        "built": True, "verified": True, "images": 12, "accuracy": 1.0, "arena_bytes": 4_000,
        "declared_arena_bytes": 6_000, "flash_bytes": 70_004,
        "instructions_per_inference": 643_200, "estimated_latency_ms": 12.5625,
        "accuracy_floor": 0.5, "ram_budget_bytes": RAM_BUDGET,
        "flash_budget_bytes": FLASH_BUDGET, "sources_sha256": "ab" * 32}
    assert outcome.message == (
        f"firmware bundle for nano: {folder}; firmware checked on the emulated cortex-m4: "
        "accuracy 1.000 on 12 check images (floor 0.500), arena 4,000 of 6,000 bytes "
        "declared and 20,480 budget, firmware 70,004 of 92,160 bytes flash budget, "
        "643,200 instructions per inference, ~12.562 ms estimated at 64 MHz")
    assert released(layout, decision)["current"]["firmware"]["elf"]["sha256"] == digest


@pytest.mark.parametrize("run, floor, reason", [
    (firmware_run([1, 2, 0] * 4), 0.5, "accuracy 0.000 on the emulated cortex-m4 on 12 check "
                                       "images (95% upper bound 0.184) is below the floor 0.500"),
    (firmware_run([0, 1, 2] * 4, arena=6_016, declared=6_000), None,
     "tensor arena 6,016 bytes needed on the emulated cortex-m4 > kTensorArenaSize 6,000 "
     "bytes declared in model_data.h"),
    (firmware_run([0, 1, 2] * 4, arena=RAM_BUDGET + 16, declared=RAM_BUDGET + 16), None,
     "tensor arena 20,496 bytes on the emulated cortex-m4 > RAM budget 20,480 bytes"),
    (firmware_run([0, 1, 2] * 4, text=FLASH_BUDGET, data=4), None,
     "firmware 92,164 bytes (text + data on the emulated cortex-m4) > flash budget 92,160 "
     "bytes"),
])
def test_a_firmware_past_a_limit_refuses_the_release_and_the_device_keeps_its_own(
        tmp_path: Path, fake_firmware: dict[str, Any], run: FirmwareRun, floor: float | None,
        reason: str) -> None:
    layout = mcu_layout(tmp_path)
    fake_firmware["run"] = run
    decision = mcu.McuTarget("nano", NANO).release(job(layout, floor=floor))
    outcome = decision.outcome
    assert outcome.status is ReleaseStatus.REFUSED and decision.current is None
    assert outcome.message == f"nano keeps its release: the firmware check failed: {reason}"
    assert outcome.mlflow_version is None  # never registered
    # The refused bundle is gone; the device's current bundle and record stay.
    assert sorted(path.name for path in layout.device_releases("nano").iterdir()) == [
        OLD["release"], "release.json"]
    record = released(layout, decision)
    assert record["current"] == OLD and record["attempts"][-1]["status"] == "refused"


@pytest.mark.parametrize("passes", [True, False])
def test_old_bundles_are_removed_only_once_the_firmware_passed(
        tmp_path: Path, fake_firmware: dict[str, Any], passes: bool) -> None:
    """Three older bundles besides the current one, keep 2: a release that passes keeps
    the newest old one, the current one and itself; a refused one removes none."""
    layout = mcu_layout(tmp_path)
    for release_id in OLD_IDS[1:]:
        (layout.device_releases("nano") / release_id).mkdir()
    if not passes:
        fake_firmware["run"] = firmware_run([0, 1, 2] * 4, arena=6_016, declared=6_000)
    decision = mcu.McuTarget("nano", NANO).release(job(layout, keep=2))
    assert decision.outcome.status is (ReleaseStatus.RELEASED if passes
                                       else ReleaseStatus.REFUSED)
    folders = sorted(path.name for path in layout.device_releases("nano").iterdir()
                     if path.is_dir())
    assert folders == ([OLD["release"], OLD_IDS[-1], str(decision.outcome.release_id)]
                       if passes else sorted([OLD["release"], *OLD_IDS[1:]]))


def test_a_firmware_that_does_not_build_fails_the_release_with_the_reason(
        tmp_path: Path, fake_firmware: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    layout = mcu_layout(tmp_path)

    def broken(*args: Any, **kwargs: Any) -> FirmwareRun:
        raise StepError("firmware: model_data.cc does not compile: error: x\n  here")

    monkeypatch.setattr(mcu_release, "run_bundle", broken)
    decision = mcu.McuTarget("nano", NANO).release(job(layout))
    assert decision.outcome.status is ReleaseStatus.FAILED and decision.current is None
    assert decision.outcome.message == (
        "nano keeps its release: its firmware for the emulated cortex-m4 was not built or run: "
        "firmware: model_data.cc does not compile: error: x here")
    assert released(layout, decision)["current"] == OLD
    assert [path.name for path in layout.device_releases("nano").iterdir()
            if path.is_dir()] == [OLD["release"]]


def test_missing_prerequisites_release_a_source_bundle_labelled_unverified(
        tmp_path: Path, fake_firmware: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    layout = mcu_layout(tmp_path)
    why = "firmware sources: /nowhere is not a folder: set benchmark.firmware.sources"
    monkeypatch.setattr(mcu_release, "missing_prerequisites", lambda settings, core: why)
    decision = mcu.McuTarget("nano", NANO).release(job(layout))
    outcome = decision.outcome
    assert outcome.status is ReleaseStatus.RELEASED and "images" not in fake_firmware
    folder = layout.device_releases("nano") / str(outcome.release_id)
    assert outcome.message == (f"firmware bundle for nano: {folder}; firmware not built, so "
                               f"not verified on the emulated cortex-m4: {why}")
    assert decision.current is not None and decision.current["firmware"] == {
        "built": False, "verified": False, "reason": why}
    assert not (folder / "firmware.elf").exists()
    assert "firmware" not in json.loads((folder / "manifest.json").read_text())


def test_a_device_without_a_target_keeps_the_bundle_only_release(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = mcu_layout(tmp_path)
    monkeypatch.setattr(mcu, "check_bundle",
                        lambda *args: pytest.fail("a device without target was checked"))
    plain = NANO.model_copy(update={"target": None, "clock_mhz": None})
    decision = mcu.McuTarget("nano", plain).release(job(layout))
    assert decision.outcome.status is ReleaseStatus.RELEASED
    assert decision.current == {"release": decision.outcome.release_id, "variant": "tflm-int8",
                                "sha256": "ab" * 32, "mlflow": {"name": "m", "version": 3}}
    assert decision.outcome.message == (
        f"firmware bundle for nano: "
        f"{layout.device_releases('nano') / str(decision.outcome.release_id)}")


# ---------------------------------------------------------------- end to end (arm)


@pytest.mark.arm
def test_the_tiny_tflm_variant_released_to_an_emulated_nano_33_ble(
        tiny_project: Any, tflm_bundle: tuple[Path, Path], firmware_settings: FirmwareSettings,
        m4_library: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the release step: a device whose flash the firmware overflows refuses the
    release (nothing kept, nothing current); a Nano 33 BLE-like one gets it, with the
    firmware image in the bundle, its sha256 in the manifest and the record, and the
    figures of the check on the emulated core. The sources are params.yaml's only."""
    import shutil

    from tasks.config import load_farm
    from tasks.release import release_device
    from tasks.targets.firmware.settings import SOURCES_ENV

    monkeypatch.delenv(SOURCES_ENV, raising=False)

    bundle, prepared = tflm_bundle
    layout = Layout(tmp_path / "project")
    shutil.copytree(prepared, layout.prepared)
    shutil.copytree(Layout(bundle.parents[2]).variants, layout.variants)
    (layout.root / "farm.yaml").write_text(
        "devices:\n"
        "  tight: {transport: mcu, flash_kb: 64, ram_kb: 256, target: cortex-m4, clock_mhz: 64}\n"
        "  nano33-ble: {transport: mcu, flash_kb: 1024, ram_kb: 256, target: cortex-m4, "
        "clock_mhz: 64}\n", encoding="utf-8")
    farm = load_farm(layout.root / "farm.yaml")
    params = tiny_project.params.model_copy(update={
        "benchmark": tiny_project.params.benchmark.model_copy(
            update={"firmware": firmware_settings}),
        "release": ReleaseParams(check_images=40)})
    layout.reports.mkdir(parents=True)
    layout.summary.write_text(json.dumps({
        "reference_accuracy": 0.9, "rank_by": "latency_p50_ms",
        "requirements": {name: {"min_accuracy": 0.5, "max_accuracy_drop": None}
                         for name in ("tight", "nano33-ble")},
        "counts": {"pass": 2, "fail": 0, "error": 0, "skipped": 0},
        "recommendations": {"tight": "tflm-int8", "nano33-ble": "tflm-int8"}, "results": []}))

    refused = release_device(params, farm, layout, "tight")
    assert refused.status == "refused", refused.message
    assert refused.message.startswith("tight keeps its release: the firmware check failed: "
                                      "firmware ") and "> flash budget 49,152 bytes" in \
        refused.message
    assert read_record(layout, "tight")["current"] is None
    assert [path.name for path in layout.device_releases("tight").iterdir()] == ["release.json"]

    outcome = release_device(params, farm, layout, "nano33-ble")
    assert outcome.status == "released", outcome.message
    folder = layout.device_releases("nano33-ble") / str(outcome.release_id)
    current = read_record(layout, "nano33-ble")["current"]
    assert current is not None and current["release"] == outcome.release_id
    firmware = current["firmware"]
    assert firmware is not None
    elf = folder / "firmware.elf"
    assert firmware["elf"]["sha256"] == hashlib.sha256(elf.read_bytes()).hexdigest()
    assert firmware["elf"]["bytes"] == elf.stat().st_size
    assert elf.read_bytes()[:4] == b"\x7fELF"
    assert firmware["bin"] is not None
    assert firmware["bin"]["sha256"] == hashlib.sha256(
        (folder / "firmware.bin").read_bytes()).hexdigest()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["firmware"] == firmware
    assert {"firmware.elf", "firmware.bin", "model_data.cc"} <= set(manifest["files"])
    assert firmware["built"] is firmware["verified"] is True
    assert firmware["images"] == 40 and firmware["accuracy_upper"] >= 0.5
    assert firmware["accuracy_floor"] == 0.5
    assert 0 < firmware["arena_bytes"] <= firmware["declared_arena_bytes"]
    assert firmware["arena_bytes"] <= firmware["ram_budget_bytes"] == 196_608
    assert 0 < firmware["flash_bytes"] <= firmware["flash_budget_bytes"] == 786_432
    assert firmware["instructions_per_inference"] > 0
    assert firmware["estimated_latency_ms"] == pytest.approx(
        firmware["instructions_per_inference"] * 1.25 / 64_000)
    assert "firmware checked on the emulated cortex-m4: accuracy" in outcome.message
    print(f"\nnano33-ble-like release: {outcome.message}\n  "
          + json.dumps({key: firmware[key] for key in (
              "images", "accuracy", "accuracy_upper", "arena_bytes", "arena_used_bytes",
              "declared_arena_bytes", "flash_bytes", "instructions_per_inference",
              "estimated_latency_ms")}))
