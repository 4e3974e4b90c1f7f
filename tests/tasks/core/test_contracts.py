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

from tasks.core.contracts.prepared import load_split, write_split
from tasks.core.contracts.results import ResultRecord, read_result, write_result
from tasks.core.contracts.summary import Summary, read_summary
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
