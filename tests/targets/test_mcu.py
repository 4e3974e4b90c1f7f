"""tasks.targets.mcu: the fit budgets (capacity minus margin, in KB of 1024 bytes), what a
release records as the device's previous bundle, which bundles a release keeps, and the
bundle's manifest, on hand-made variants (no conversion: the figures are set exactly); and
the interval of a row from the host's int8 run (convert's check, scripted): a detector's
is its kind's bootstrap, a classifier's the binomial one as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.config import McuDevice, ReleaseParams, Requirements
from tasks.core.contracts.prepared import PreparedMeta, write_meta
from tasks.core.contracts.release import (ReleaseDecision, ReleaseOutcome, ReleaseStatus,
                                          write_record)
from tasks.core.contracts.variants import (Variant, VariantCheck, VariantFile, VariantIndex,
                                           write_variant_index)
from tasks.core.layout import Layout
from tasks.targets import mcu
from tasks.targets.base import ReleaseJob
from tests.tasks.select.summaries import judge

# 100 KB flash with 10% kept for the firmware, 40 KB RAM with half kept: every budget
# differs from the others and from what a KB of 1000 bytes would give.
DEVICE = McuDevice(transport="mcu", flash_kb=100, ram_kb=40, flash_margin=0.1, ram_margin=0.5)
FLASH_BUDGET, RAM_BUDGET = 92_160, 20_480
CLASSES = ["cat", "dog", "bird"]
OLD_IDS = [f"2024010{day}T000000000000Z-tflm-int8" for day in (1, 2, 3, 4)]


def tflm_variant(name: str = "tflm-int8", model_bytes: int = 20_000, arena_bytes: int = 6_000,
                 sha256: str = "ab" * 32) -> Variant:
    """A produced, checked ``tflm`` variant whose files lie in ``variants/<name>/``."""
    return Variant(
        name=name, format="tflm", precision="int8", source="base", runtime="tflm", status="ok",
        reason=None, file=f"{name}/model.tflite",
        files=[VariantFile(path=f"{name}/model.tflite", bytes=model_bytes, sha256=sha256)],
        bytes=model_bytes, extras=[f"{name}/model_data.cc", f"{name}/model_data.h"],
        sha256=sha256, spec={"arena_bytes": arena_bytes, "input": "int8"}, accuracy=0.8,
        details={"model_bytes": model_bytes, "arena_bytes": arena_bytes, "ops": ["CONV_2D"]},
        check=VariantCheck(samples=120, agreement=1.0, max_abs_logit_diff=0.0, accuracy=0.8,
                           reference_accuracy=0.8, passed=True, failures=[]))


def project(tmp_path: Path, variant: Variant) -> Layout:
    """A layout with the variant's files and the prepared data's meta (classes, shape)."""
    layout = Layout(tmp_path)
    for path in [variant.file, *(variant.extras or [])]:
        (layout.variants / path).parent.mkdir(parents=True, exist_ok=True)
        (layout.variants / path).write_text(f"contents of {path}", encoding="utf-8")
    layout.prepared.mkdir(parents=True)
    write_meta(layout.prepared, PreparedMeta(
        source="data/raw", classes=CLASSES, input_shape=[32, 32, 1], normalisation="unit",
        color="grayscale", seed=1, counts={}, per_class={}, per_split_class={}, warnings=[],
        skipped_count=0, skipped=[], sha256={}))
    return layout


def fit_records(tmp_path: Path, *variants: Variant) -> dict[str, dict[str, Any]]:
    write_variant_index(tmp_path / "variants", VariantIndex(reference_accuracy=0.8, sources={},
                                                            variants=list(variants)))
    run = mcu.check_fit("esp32", DEVICE, tmp_path / "variants", tmp_path / "results")
    records = [json.loads(path.read_text(encoding="utf-8")) for path in run.results]
    return {record["variant"]: record for record in records}


def test_the_budgets_are_capacity_in_kb_of_1024_bytes_less_each_own_margin(
        tmp_path: Path) -> None:
    records = fit_records(tmp_path, tflm_variant(model_bytes=20_000, arena_bytes=6_000))
    assert records["tflm-int8"]["mcu"] == {
        "model_bytes": 20_000, "arena_bytes": 6_000, "flash_bytes": 102_400,
        "ram_bytes": 40_960, "flash_budget_bytes": FLASH_BUDGET,
        "ram_budget_bytes": RAM_BUDGET, "accuracy": 0.8, "accuracy_samples": 120,
        "ops": ["CONV_2D"],
        "not_emulated": "no emulator here for its core: farm.yaml gives esp32 no target "
                        "(emulated cores: cortex-m4)"}


def test_a_variant_fits_its_budgets_exactly_and_not_a_byte_more(tmp_path: Path) -> None:
    records = fit_records(
        tmp_path, tflm_variant("tflm-exact", FLASH_BUDGET, RAM_BUDGET),
        tflm_variant("tflm-over", FLASH_BUDGET + 1, RAM_BUDGET + 1),
        tflm_variant("tflm-flash", FLASH_BUDGET + 1, RAM_BUDGET),
        tflm_variant("tflm-arena", FLASH_BUDGET, RAM_BUDGET + 1))
    requirements = Requirements(max_accuracy_drop=None)
    rows = {name: judge(record, requirements, 0.8) for name, record in records.items()}
    assert (rows["tflm-exact"].status, rows["tflm-exact"].reasons) == ("pass", [])
    assert (rows["tflm-over"].status, rows["tflm-over"].reasons) == (
        "fail", ["model 90.0 KB > flash budget 90.0 KB",
                 "tensor arena 20.0 KB > RAM budget 20.0 KB"])
    assert rows["tflm-flash"].reasons == ["model 90.0 KB > flash budget 90.0 KB"]
    assert rows["tflm-arena"].reasons == ["tensor arena 20.0 KB > RAM budget 20.0 KB"]


def release_job(layout: Layout, variant: Variant, keep: int = 5) -> ReleaseJob:
    def no_board(entry: Any) -> ReleaseDecision:
        raise AssertionError("a microcontroller has no board to release on")

    return ReleaseJob(layout=layout, params=ReleaseParams(keep=keep), variant=variant,
                      register=lambda: {"name": "edge-model", "version": 7},
                      alias_moved=lambda mlflow: "", on_board=no_board)


def test_a_release_records_the_bundle_it_replaces_as_previous(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    variant = tflm_variant()
    layout = project(tmp_path, variant)
    old = {"release": "r0", "variant": "old", "sha256": "x"}
    write_record(layout, ReleaseDecision(
        ReleaseOutcome("esp32", ReleaseStatus.RELEASED, "old", "r0", "first"), old,
        {"release": "r-older", "variant": "older", "sha256": "y"}))
    monkeypatch.setattr(mcu, "write_bundle", lambda *args, **kwargs: ReleaseOutcome(
        "esp32", ReleaseStatus.RELEASED, variant.name, "r1", "bundle written"))
    decision = mcu.McuTarget("esp32", DEVICE).release(release_job(layout, variant))
    assert decision.previous == old
    assert decision.current == {"release": "r1", "variant": "tflm-int8", "sha256": "ab" * 32,
                                "mlflow": {"name": "edge-model", "version": 7}}
    assert decision.outcome == ReleaseOutcome("esp32", ReleaseStatus.RELEASED, "tflm-int8",
                                              "r1", "bundle written", "7")


def _release_with_old_bundles(tmp_path: Path, current: str | None) -> tuple[Layout, str]:
    """Four older bundles, ``current`` the one the record says runs, then a release
    keeping 2; returns the new release id."""
    variant = tflm_variant()
    layout = project(tmp_path, variant)
    for release_id in OLD_IDS:
        (layout.device_releases("esp32") / release_id).mkdir(parents=True)
    if current is not None:
        write_record(layout, ReleaseDecision(
            ReleaseOutcome("esp32", ReleaseStatus.RELEASED, "tflm-int8", current, "then"),
            {"release": current, "variant": "tflm-int8", "sha256": "cd" * 32}, None))
    outcome = mcu.write_bundle(layout, "esp32", DEVICE, variant, ReleaseParams(keep=2))
    assert outcome.status is ReleaseStatus.RELEASED and outcome.release_id is not None
    return layout, outcome.release_id


def bundles(layout: Layout) -> list[str]:
    return sorted(path.name for path in layout.device_releases("esp32").iterdir()
                  if path.is_dir())


def test_a_release_keeps_exactly_the_newest_bundles(tmp_path: Path) -> None:
    layout, new = _release_with_old_bundles(tmp_path, current=None)
    assert bundles(layout) == [OLD_IDS[-1], new]


def test_a_release_never_removes_the_bundle_the_device_runs(tmp_path: Path) -> None:
    """The record's current bundle, the oldest here, becomes the previous one: kept."""
    layout, new = _release_with_old_bundles(tmp_path, current=OLD_IDS[0])
    assert bundles(layout) == [OLD_IDS[0], OLD_IDS[-1], new]


def test_the_bundle_manifest_says_what_it_holds_and_the_budget_it_was_checked_against(
        tmp_path: Path) -> None:
    variant = tflm_variant(model_bytes=20_000, arena_bytes=6_000)
    layout = project(tmp_path, variant)
    outcome = mcu.write_bundle(layout, "esp32", DEVICE, variant, ReleaseParams())
    release_id = str(outcome.release_id)
    assert outcome == ReleaseOutcome(
        "esp32", ReleaseStatus.RELEASED, "tflm-int8", release_id,
        f"firmware bundle for esp32: {layout.device_releases('esp32') / release_id}")
    folder = layout.device_releases("esp32") / release_id
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    created_at = manifest.pop("created_at")
    assert manifest == {
        "release_id": release_id, "device": "esp32", "variant": "tflm-int8",
        "sha256": "ab" * 32,
        "files": ["labels.h", "model.tflite", "model_data.cc", "model_data.h"],
        "arena_bytes": 6_000, "spec": {"arena_bytes": 6_000, "input": "int8"},
        "classes": CLASSES, "input_shape": [32, 32, 1],
        "budget": {"flash_kb": 100, "ram_kb": 40, "flash_margin": 0.1, "ram_margin": 0.5}}
    assert isinstance(created_at, str) and created_at.endswith("+00:00")
    assert sorted(path.name for path in folder.iterdir()) == [
        "labels.h", "manifest.json", "model.tflite", "model_data.cc", "model_data.h"]
    assert (folder / "model_data.cc").read_text() == "contents of tflm-int8/model_data.cc"
    assert (folder / "labels.h").read_text() == mcu.labels_header(CLASSES)


# ------------------------------------------------------------ every outcome (issue 27)


def test_labels_h_is_exactly_the_count_and_the_names_in_output_order() -> None:
    assert mcu.labels_header(["cat", "dog", "bird"]) == (
        "// Class names in the model's output order (written by edgeflow release).\n"
        "#pragma once\n"
        "\n"
        "constexpr int kLabelCount = 3;\n"
        "constexpr const char* kLabels[kLabelCount] = {\n"
        '    "cat",\n'
        '    "dog",\n'
        '    "bird"\n'
        "};\n")


def _c_bytes(literal: str) -> bytes:
    """The bytes a C compiler stores for a narrow literal of only \\ooo, \\", \\\\, \\? and
    plain printable characters (what _c_string writes)."""
    assert literal[0] == literal[-1] == '"'
    body, out, index = literal[1:-1], bytearray(), 0
    while index < len(body):
        if body[index] != "\\":
            assert 0x20 <= ord(body[index]) < 0x7f and body[index] not in '"\\?'
            out.append(ord(body[index]))
            index += 1
        elif body[index + 1] in '"\\?':
            out.append(ord(body[index + 1]))
            index += 2
        else:
            digits = body[index + 1:index + 4]
            assert len(digits) == 3 and set(digits) <= set("01234567"), digits
            out.append(int(digits, 8))
            index += 4
    return bytes(out)


def test_every_byte_of_a_class_name_reaches_the_literal_as_itself() -> None:
    """Each byte value (as UTF-8 of the code points 0-255) and a name of every one of
    them: the literal holds exactly the name's bytes, printable ASCII readable."""
    from tasks.targets.mcu import _c_string

    every = "".join(map(chr, range(256))) + "日本 ??= 🙂"
    assert _c_bytes(_c_string(every)) == every.encode("utf-8")
    for code in range(128):
        char = chr(code)
        expected = ("\\" + char if char in '"\\?' else char if 0x20 <= code < 0x7f
                    else f"\\{code:03o}")
        assert _c_string(char) == f'"{expected}"', code


def test_a_variant_of_another_format_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    variant = tflm_variant().model_copy(update={"name": "tflite-int8", "format": "tflite"})
    layout = project(tmp_path, tflm_variant())
    outcome = mcu.write_bundle(layout, "esp32", DEVICE, variant, ReleaseParams())
    assert outcome == ReleaseOutcome(
        "esp32", ReleaseStatus.REFUSED, "tflite-int8", None,
        "esp32 is a microcontroller: only tflm variants run there, not tflite-int8")
    assert not layout.device_releases("esp32").exists()
    job = release_job(layout, variant)
    job = ReleaseJob(layout=layout, params=job.params, variant=variant,
                     register=lambda: pytest.fail("a refused bundle was registered"),
                     alias_moved=job.alias_moved, on_board=job.on_board)
    assert mcu.McuTarget("esp32", DEVICE).release(job) == ReleaseDecision(outcome)


@pytest.mark.parametrize("current, unchanged", [
    ({"release": "r0", "variant": "tflm-int8", "sha256": "ab" * 32}, True),
    ({"release": "r0", "variant": "tflm-int8", "sha256": "cd" * 32}, False),  # rebuilt
    ({"release": "r0", "variant": "tflm-other", "sha256": "ab" * 32}, False),  # renamed
])
def test_a_bundle_is_unchanged_only_for_the_same_variant_with_the_same_bytes(
        tmp_path: Path, current: dict[str, str], unchanged: bool) -> None:
    variant = tflm_variant()
    layout = project(tmp_path, variant)
    write_record(layout, ReleaseDecision(
        ReleaseOutcome("esp32", ReleaseStatus.RELEASED, current["variant"], "r0", "then"),
        current, None))
    outcome = mcu.write_bundle(layout, "esp32", DEVICE, variant, ReleaseParams())
    if unchanged:
        assert outcome == ReleaseOutcome("esp32", ReleaseStatus.UNCHANGED, "tflm-int8", "r0",
                                         "esp32's bundle is already tflm-int8")
        assert bundles(layout) == []
        job = release_job(layout, variant)
        job = ReleaseJob(layout=layout, params=job.params, variant=variant,
                         register=lambda: pytest.fail("an unchanged bundle was registered"),
                         alias_moved=job.alias_moved, on_board=job.on_board)
        assert mcu.McuTarget("esp32", DEVICE).release(job) == ReleaseDecision(outcome)
    else:
        assert outcome.status is ReleaseStatus.RELEASED
        assert bundles(layout) == [outcome.release_id]


@pytest.mark.parametrize("keep", [3, 4, 5])
def test_a_release_keeps_keep_bundles_at_its_boundary_and_only_release_folders_count(
        tmp_path: Path, keep: int) -> None:
    """Three older bundles and the new one are four: keep 4 or 5 removes none, keep 3 the
    oldest; a folder or file not named like a release is never removed nor counted."""
    variant = tflm_variant()
    layout = project(tmp_path, variant)
    for release_id in OLD_IDS[1:]:
        (layout.device_releases("esp32") / release_id).mkdir(parents=True)
    (layout.device_releases("esp32") / "0-notes").mkdir()
    # A file named like a release, newer than the old bundles: not a bundle, not counted.
    (layout.device_releases("esp32") / "20250101T000000000000Z-tflm-int8").write_text("x")
    new = mcu.write_bundle(layout, "esp32", DEVICE, variant, ReleaseParams(keep=keep))
    assert bundles(layout) == ["0-notes", *OLD_IDS[1 + (keep == 3):], new.release_id]
    assert (layout.device_releases("esp32") / "20250101T000000000000Z-tflm-int8").is_file()


def test_a_fit_skips_other_runtimes_and_reports_unproduced_variants_by_their_reason(
        tmp_path: Path) -> None:
    onnx = tflm_variant("onnx-fp32").model_copy(update={"runtime": "onnxruntime",
                                                        "format": "onnx"})
    rejected = tflm_variant("tflm-f16").model_copy(update={
        "status": "rejected", "reason": "accuracy fell 0.3"})
    device = DEVICE.model_copy(update={"tags": {"board": "s3"}})
    write_variant_index(tmp_path / "variants", VariantIndex(
        reference_accuracy=0.8, sources={}, variants=[tflm_variant(), onnx, rejected]))
    run = mcu.check_fit("esp32", device, tmp_path / "variants", tmp_path / "results")
    assert [path.name for path in run.results] == ["tflm-int8.json", "onnx-fp32.json",
                                                   "tflm-f16.json"]
    assert all(path.parent == tmp_path / "results" for path in run.results)
    records = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in run.results}
    assert {name: (record["status"], record["error"]) for name, record in records.items()} == {
        "tflm-int8": ("ok", None),
        "onnx-fp32": ("skipped", "esp32 is a microcontroller: it runs TensorFlow Lite Micro "
                                 "(tflm) variants only"),
        "tflm-f16": ("rejected", "rejected by convert: accuracy fell 0.3")}
    assert {name: record["device_facts"] for name, record in records.items()} == {
        name: {"class": "mcu", "board": "s3"} for name in records}
    assert {record["threads"] for record in records.values()} == {None}
    assert (run.device, run.probe, run.remote_run_dir) == ("esp32", {}, None)


def test_the_progress_names_each_variant_with_its_own_outcome(tmp_path: Path) -> None:
    from tasks.core import notices

    tflm = tflm_variant(model_bytes=20_000, arena_bytes=6_000)
    onnx = tflm.model_copy(update={"name": "onnx-fp32", "format": "onnx",
                                   "runtime": "onnxruntime", "precision": "fp32"})
    seen: list[str] = []
    with notices.listening(lambda notice: seen.append(
            notice.line() if isinstance(notice, notices.Progress) else notice.message)):
        records = fit_records(tmp_path, tflm, onnx)
    assert {name: record["status"] for name, record in records.items()} == {
        "tflm-int8": "ok", "onnx-fp32": "skipped"}
    assert seen == ["benchmark[esp32]: 0/2", "benchmark[esp32]: 1/2 tflm-int8 (ok)",
                    "benchmark[esp32]: 2/2 onnx-fp32 (skipped)"]


# ------------------------------------ the interval of a row from the host's int8 run


def host_check(monkeypatch: pytest.MonkeyPatch, raw: np.ndarray, spec: dict[str, Any],
               labels: Any) -> VariantCheck:
    """convert's check of a variant whose runtime answers image i with ``raw[i]`` (int8,
    de-quantised by ``spec``'s output as every runtime's is): the host's int8 run."""
    from tasks import convert as convert_step
    from tasks.config import ConvertParams
    from tasks.device.runtimes import Runner
    from tasks.models.formats import Exported

    runner = Runner(lambda x: raw[int(x.reshape(-1)[0]) + 128][np.newaxis], "scripted", "0")
    monkeypatch.setattr(convert_step, "_check_runner", lambda exported, runtime: (runner, None))
    # Image i quantises to i - 128 in its first value: the scripted runner's index.
    images = (np.arange(len(raw), dtype=np.float32) / 255.0)[:, None, None, None] * np.ones(
        (1, 4, 4, 1), np.float32)
    tensors = __import__("tasks.device.tensors", fromlist=["dequantize_output"])
    reference = np.stack([tensors.dequantize_output(row, spec["output"]) for row in raw])
    return convert_step.check_variant(Exported(Path("model.tflite"), (), spec), "scripted",
                                      images, labels, reference, "int8", ConvertParams())


def with_check(variant: Variant, check: VariantCheck, spec: dict[str, Any]) -> Variant:
    return variant.model_copy(update={"check": check, "accuracy": check.accuracy,
                                      "spec": {**spec, "arena_bytes": 6_000}})


def test_a_detectors_row_shows_the_host_runs_bootstrap_interval_not_a_binomial_one(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A tflm detector on a microcontroller without an emulated core: its row's interval
    is the detection kind's bootstrap over the host run's per-image records, exactly, in
    the result and the summary row; not the Wilson interval of a share of images."""
    from tasks.core.accuracy import wilson_interval
    from tasks.device.kinds import detection
    from tests.targets.firmware.test_run import GRID_SPEC, scenes

    raw = np.random.default_rng(7).integers(-128, 128, (30, 63)).astype(np.int8)
    decoded, labels = scenes(raw)
    check = host_check(monkeypatch, raw, GRID_SPEC, labels)
    records = detection.KIND.per_sample(decoded, labels)
    expected = [float(bound) for bound in detection.KIND.interval(records)]
    assert check.accuracy == detection.KIND.metric(records) and check.samples == 30
    assert check.accuracy_interval == expected

    record = fit_records(tmp_path, with_check(tflm_variant(), check, GRID_SPEC))["tflm-int8"]
    assert record["mcu"]["accuracy_interval"] == expected
    row = judge(record, Requirements(max_accuracy_drop=None), 0.8)
    assert (row.accuracy, row.accuracy_samples) == (check.accuracy, 30)
    assert row.accuracy_interval == expected
    assert row.accuracy_interval != pytest.approx(
        list(wilson_interval(round(check.accuracy * 30), 30)), abs=1e-3)


def test_a_classifiers_row_keeps_its_binomial_interval_and_its_record_as_it_was(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tasks.core.accuracy import accuracy_interval
    from tests.targets.firmware.test_run import CLASS_SPEC

    raw = np.asarray([[-52, 100, 39], [-28, 61, 45], [90, 1, 2], [0, 0, 5]], np.int8)
    check = host_check(monkeypatch, raw, CLASS_SPEC, np.asarray([1, 2, 0, 2]))
    assert check.accuracy == 0.75 and "accuracy_interval" not in check.document()
    record = fit_records(tmp_path, with_check(tflm_variant(), check, CLASS_SPEC))["tflm-int8"]
    assert "accuracy_interval" not in record["mcu"]
    row = judge(record, Requirements(max_accuracy_drop=None), 0.8)
    assert row.accuracy_interval == list(accuracy_interval(0.75, 4))
