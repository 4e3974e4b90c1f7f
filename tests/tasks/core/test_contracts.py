"""The file contracts between steps: each reader refuses a missing, non-JSON or wrongly
shaped file with one line naming it and the step to run again; each writer writes the
document as given (absent keys stay absent, declaration order) and refuses a document
that breaks its own contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from tasks.core.contracts.prepared import image_boxes, load_split, pad_boxes, write_split
from tasks.core.contracts.results import (HarnessNotOk, McuFit, ResultRecord, ResultStatus,
                                          read_result, write_result)
from tasks.core.contracts.summary import Counts, Reference, RowStatus, Summary, read_summary
from tasks.core.contracts.variants import Variant, read_variant_index
from tasks.core.errors import StepError

SKIPPED_RECORD = {
    "variant": "onnx-fp32", "device": "pi", "format": "onnx", "precision": "fp32",
    "source": "base", "runtime": "onnxruntime", "size_bytes": 1200, "sha256": "0" * 64,
    "declared_execution_precision": "f32", "threads": 1, "device_facts": {"arch": "aarch64"},
    "device_run_dir": "/home/pi/edgeflow/runs/x", "status": "skipped",
    "error": "runtime 'onnxruntime' is not installed on pi"}


# --------------------------------------------------------------------------- prepared


def test_a_split_round_trips(tmp_path: Path) -> None:
    x, y = np.zeros((3, 8, 8, 1), np.float32), np.arange(3, dtype=np.int64)
    write_split(tmp_path, "val", x, y)
    loaded_x, loaded_y = load_split(tmp_path, "val")
    assert loaded_x.dtype == np.float32 and np.array_equal(loaded_y, y)


def test_a_detection_split_pads_each_images_objects_and_round_trips(tmp_path: Path) -> None:
    per_image = [np.array([[3, 0.1, 0.2, 0.4, 0.5], [0, 0.5, 0.5, 0.9, 0.8]]),
                 np.zeros((0, 5)),
                 np.array([[9, 0.0, 0.0, 1.0, 1.0 / 3]])]
    padded = pad_boxes(per_image)
    # float64: a corner read from a label file stays exactly the number written.
    assert padded.shape == (3, 2, 5) and padded.dtype == np.float64
    # Class 0 is an object; only class -1 rows are padding.
    assert padded[1, :, 0].tolist() == [-1.0, -1.0] and padded[2, 1, 0] == -1.0
    write_split(tmp_path, "test", np.zeros((3, 4, 4, 3), np.float32), padded)
    _, y = load_split(tmp_path, "test")
    for row, expected in zip(y, per_image):
        assert np.array_equal(image_boxes(row), expected)
    assert pad_boxes([np.zeros((0, 5))] * 2).shape == (2, 1, 5)


def test_a_missing_split_names_the_step_to_run(tmp_path: Path) -> None:
    with pytest.raises(StepError, match=r"train.npz is missing: run the prepare step first"):
        load_split(tmp_path / "prepared", "train")


@pytest.mark.parametrize("write, detail", [
    (lambda path: path.write_text("not an archive"), "ValueError"),
    (lambda path: np.savez(path, x=np.zeros(2)), "KeyError"),
    (lambda path: np.savez(path, x=np.zeros(2), y=np.zeros(3)), "2 images, 3 labels"),
])
def test_a_damaged_split_is_one_line(tmp_path: Path, write: Any, detail: str) -> None:
    write(tmp_path / "test.npz")
    with pytest.raises(StepError) as caught:
        load_split(tmp_path, "test")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'test.npz'} is damaged (") and detail in message
    assert message.endswith("run `edgeflow step prepare` again") and "\n" not in message


# --------------------------------------------------------------------------- readers


def test_a_record_round_trips_as_written(tmp_path: Path) -> None:
    path = write_result(tmp_path / "onnx-fp32.json", ResultRecord.model_validate(SKIPPED_RECORD))
    assert json.loads(path.read_text()) == SKIPPED_RECORD
    assert list(json.loads(path.read_text())) == list(SKIPPED_RECORD), "the key order is kept"
    assert read_result(path).document() == SKIPPED_RECORD


def test_absent_optional_keys_stay_absent() -> None:
    older = {key: value for key, value in SKIPPED_RECORD.items()
             if key not in {"declared_execution_precision", "device_run_dir"}}
    assert ResultRecord.model_validate(older).document() == older


@pytest.mark.parametrize("change, detail", [
    ({"device_facts": None}, "KeyError: 'device_facts'"),
    ({"threads": True}, "ValueError: threads: Input should be a valid integer"),
    ({"size_bytes": "1200"}, "ValueError: size_bytes: Input should be a valid integer"),
    ({"status": "done"}, "ValueError: status: Input should be 'ok', 'failed', 'skipped' or "
                         "'rejected'"),
    ({"surprise": 1}, "ValueError: surprise: Extra inputs are not permitted"),
])
def test_a_wrongly_shaped_file_names_its_first_problem(tmp_path: Path, change: dict[str, Any],
                                                       detail: str) -> None:
    document = {key: value for key, value in {**SKIPPED_RECORD, **change}.items()
                if value is not None}
    path = tmp_path / "onnx-fp32.json"
    path.write_text(json.dumps(document))
    with pytest.raises(StepError) as caught:
        read_result(path)
    assert str(caught.value) == f"{path} is damaged ({detail}): run `edgeflow step benchmark` again"


def test_readers_say_which_step_writes_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StepError, match=r"index.json is missing: run the convert step first"):
        read_variant_index(tmp_path)
    with pytest.raises(StepError, match=r"summary.json is missing: run the select step first"):
        read_summary(tmp_path / "summary.json")


def test_a_file_of_another_kind_is_refused_before_its_shape(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text('{"variants": []}')
    with pytest.raises(StepError, match=r"not a JSON object with results, counts, recommendations"):
        read_summary(path)


# --------------------------------------------------------------------------- writers


def test_a_produced_variant_without_its_artifact_breaks_the_contract() -> None:
    identity = {"name": "onnx-fp32", "format": "onnx", "precision": "fp32", "source": "base",
                "runtime": "onnxruntime"}
    assert Variant(**identity, status="skipped", reason="no exporter").document() == {
        **identity, "status": "skipped", "reason": "no exporter"}
    with pytest.raises(ValidationError, match=r"variant 'onnx-fp32' \(rejected\) has no file"):
        Variant(**identity, status="rejected", reason="agreement 0.5 < 0.9")


def test_summary_counts_keep_their_json_names() -> None:
    summary = Summary.model_validate({
        "reference_accuracy": 0.9, "rank_by": "accuracy", "requirements": {"pi": {}},
        "counts": {"pass": 0, "fail": 0, "error": 0, "skipped": 0},
        "recommendations": {"pi": None}, "results": []})
    assert summary.counts.passed == 0
    assert summary.document()["counts"] == {"pass": 0, "fail": 0, "error": 0, "skipped": 0}


# --------------------------------------------------------------------------- typed statuses


def test_a_status_read_from_a_file_is_its_enum_and_is_written_back_as_the_string(
        tmp_path: Path) -> None:
    path = tmp_path / "onnx-fp32.json"
    path.write_text(json.dumps(SKIPPED_RECORD))
    record = read_result(path)
    assert record.status is ResultStatus.SKIPPED
    write_result(tmp_path / "again.json", record)
    assert json.loads((tmp_path / "again.json").read_text()) == SKIPPED_RECORD
    row = {"variant": "a", "format": "onnx", "precision": "fp32", "source": "base",
           "device": "pi", "runtime": "onnxruntime", "size_bytes": 1, "threads": 1,
           "accuracy": None, "accuracy_samples": None, "accuracy_interval": None,
           "accuracy_drop": None, "latency_ms": None, "throughput_fps": None,
           "peak_rss_mb": None, "load_ms": None, "runtime_version": None,
           "execution_precision": None, "mcu": None, "notes": ["n"], "status": "error",
           "reasons": ["r1", "r2"]}
    summary = Summary.model_validate({
        "reference_accuracy": 0.9, "rank_by": "accuracy", "requirements": {"pi": {}},
        "counts": {"pass": 0, "fail": 0, "error": 1, "skipped": 0},
        "recommendations": {"pi": None}, "results": [row]})
    assert summary.results[0].status is RowStatus.ERROR
    assert summary.document()["results"][0]["status"] == "error"
    assert summary.results[0].remarks() == "r1; r2; n"
    with pytest.raises(ValidationError, match="Input should be 'pass', 'fail', 'error' or "
                                              "'skipped'"):
        Summary.model_validate({**summary.document(), "results": [{**row, "status": "ok"}]})


def test_counts_of_rows_and_their_line() -> None:
    counts = Counts.of([])
    assert counts.document() == {"pass": 0, "fail": 0, "error": 0, "skipped": 0}
    counts = Counts.model_validate({"pass": 3, "fail": 1, "error": 0, "skipped": 2})
    assert counts.count(RowStatus.PASS) == 3 and counts.count(RowStatus.SKIPPED) == 2
    assert counts.text() == "3 pass, 1 fail, 0 error, 2 skipped"


def test_each_status_is_counted_in_its_own_field_when_the_numbers_differ() -> None:
    """Every RowStatus member i+1 times (1, 2, 3, 4...): each count lands in its own field,
    its own place in the line, and the total is not the only thing right."""
    from tests.tasks.select.summaries import summary_row

    rows = [summary_row(f"v{i}-{n}", status=status.value)
            for i, status in enumerate(RowStatus) for n in range(i + 1)]
    counts = Counts.of(reversed(rows))
    assert [counts.count(status) for status in RowStatus] == list(range(1, len(RowStatus) + 1))
    assert counts.document() == {status.value: i + 1 for i, status in enumerate(RowStatus)}
    assert counts.text() == "1 pass, 2 fail, 3 error, 4 skipped"


def test_the_reference_of_a_summary_and_of_an_older_one() -> None:
    document = {"reference_accuracy": 0.9, "reference_samples": 360,
                "reference_interval": [0.86, 0.93], "rank_by": "accuracy", "requirements": {},
                "counts": {"pass": 0, "fail": 0, "error": 0, "skipped": 0},
                "recommendations": {}, "results": []}
    assert Summary.model_validate(document).reference == Reference(
        accuracy=0.9, samples=360, interval=[0.86, 0.93])
    older = {key: value for key, value in document.items()
             if key not in {"reference_samples", "reference_interval"}}
    assert Summary.model_validate(older).reference == Reference(accuracy=0.9)
    assert "reference_samples" not in Summary.model_validate(older).document()


def test_what_a_record_measured() -> None:
    assert ResultRecord.model_validate(SKIPPED_RECORD).measured is None
    fit = {"model_bytes": 1, "arena_bytes": 2, "flash_bytes": 3, "ram_bytes": 4,
           "flash_budget_bytes": 3, "ram_budget_bytes": 4, "accuracy": 0.5,
           "accuracy_samples": 10, "ops": []}
    mcu = ResultRecord.model_validate({**SKIPPED_RECORD, "status": "ok", "error": None,
                                       "mcu": fit}).measured
    assert isinstance(mcu, McuFit) and mcu.accuracy_samples == 10
    failed = ResultRecord.model_validate({**SKIPPED_RECORD, "status": "failed", "harness": {
        "status": "failed", "error": "boom"}})
    assert isinstance(failed.harness, HarnessNotOk) and failed.measured is None
