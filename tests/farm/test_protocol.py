"""The device protocol on documents alone (no device): how ranges read, what a probe must
be, and that whatever the protocol accepts from a device, the results contract the later
steps read accepts too (a device must never be able to break the benchmark step's own
writing). The protocol's refusals with their exact messages are tested where a device
sends them: tests/tasks/test_benchmark.py."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from tasks.core import device_code
from tasks.core.contracts.results import HarnessNotOk, HarnessOk, ResultRecord
from tasks.farm.protocol import (OK_RANGES, Range, parse_untrusted_json, validate_harness_result,
                                 validate_probe)
from tests.helpers import with_field

LATENCY = device_code.load("latency")


def measured(latencies_ns: list[int]) -> dict[str, Any]:
    """What the harness states of these timed runs: their statistics and the raw
    latencies they come from (in the order the results contract keeps)."""
    summary = LATENCY.latency_summary([ns / 1e6 for ns in latencies_ns])
    throughput = summary.pop("throughput_fps")
    return {**summary, "latencies": LATENCY.encode_latencies(latencies_ns),
            "throughput_fps": throughput}


# Ten timed runs: p50 1.005 ms, p90 1.33 ms.
RAW_NS = [900_000, 960_000, 980_000, 1_000_000, 1_000_000, 1_010_000, 1_050_000, 1_100_000,
          1_300_000, 1_600_000]
# A result as the harness writes it (protocol 1), in its key order.
GOOD_RESULT: dict[str, Any] = {
    "protocol": 1, "runtime_requested": "onnxruntime", "host": {"arch": "x86_64", "cores": 2},
    "started_at": 1.0,
    "runtime": {"name": "onnxruntime", "version": "1.32.0", "requested": "onnxruntime",
                "accelerator": "CPUExecutionProvider", "requested_precision": "f32",
                "execution_precision": "f32"},
    "threads": 1, "load_ms": 3.5, "first_inference_ms": 0.8,
    "warmup": {"runs": 2, "seconds": 0.01}, **measured(RAW_NS),
    "rss_before_load_mb": 80.0, "peak_rss_mb": 95.0,
    "accuracy": 0.9, "accuracy_samples": 50, "finished_at": 2.0, "status": "ok", "error": None}
IDENTITY = {"variant": "onnx-fp32", "device": "pi", "format": "onnx", "precision": "fp32",
            "source": "base", "runtime": "onnxruntime", "size_bytes": 1200, "sha256": "0" * 64,
            "declared_execution_precision": "f32", "threads": 1, "device_facts": {},
            "device_run_dir": "/w/runs/x"}


def test_ranges_read_as_intervals() -> None:
    assert str(OK_RANGES["accuracy"]) == "[0, 1]"
    assert str(OK_RANGES["throughput_fps"]) == "(0, inf)"
    assert str(Range(1)) == "[1, inf)"
    assert 0.0 not in OK_RANGES["throughput_fps"] and 1.0 in OK_RANGES["accuracy"]


def test_a_probe_is_flat_named_facts_made_visible() -> None:
    probe = validate_probe({"host": {"arch": "arm\x1b[2J", "cores": 4, "temperature_c": None},
                            "runtimes": {"tflite": "ai_edge_litert"},
                            "runtime_versions": {"tflite": "2.3"}})
    assert probe["host"] == {"arch": "arm\\x1b[2J", "cores": 4, "temperature_c": None}
    for bad in ({"host": {"cpu": {"model": "x"}}}, {"host": {"a b": 1}},
                {"host": {}, "runtimes": {"tflite": 2}, "runtime_versions": {}}):
        with pytest.raises(ValueError, match=r"^probe field '(host|runtimes)' is not "
                                             r"(a flat object of named facts|an object of texts)$"):
            validate_probe({"runtimes": {}, "runtime_versions": {}, **bad})


def _odd_but_accepted() -> list[dict[str, Any]]:
    """Results the protocol accepts although no harness of ours writes them."""
    return [
        GOOD_RESULT,
        {**GOOD_RESULT, "accuracy": 1, "load_ms": 0, "peak_rss_mb": 0},  # whole numbers
        {**GOOD_RESULT, "runtime": {"version": 5, "execution_precision": ["f32"]}},
        {**GOOD_RESULT, "latency_ms": {**GOOD_RESULT["latency_ms"], "p999": "slow"}},
        {**GOOD_RESULT, "error": 3, "newer_field": {"x": [1, None]}, "host": "a board"},
        {key: value for key, value in GOOD_RESULT.items()
         if key in {"status", "runtime", "latency_ms", "throughput_fps", "accuracy",
                    "peak_rss_mb", "load_ms", "first_inference_ms", "runs", "accuracy_samples",
                    "latencies"}},
        {"status": "failed", "error": "boom", "traceback": "Traceback ...", "extra": 1},
        {"status": "skipped", "error": "CPU lacks native bf16"},
    ]


@pytest.mark.parametrize("document", _odd_but_accepted())
def test_what_the_protocol_accepts_the_results_contract_accepts(document: dict[str, Any]) -> None:
    raw = json.dumps(document).encode()
    checked = validate_harness_result(parse_untrusted_json(raw))
    # As benchmark writes it: an ok result's error is None whatever the device said.
    error = None if checked["status"] == "ok" else checked["error"]
    record = ResultRecord.model_validate({**IDENTITY, "status": checked["status"],
                                          "error": error, "harness": checked})
    kind = HarnessOk if checked["status"] == "ok" else HarnessNotOk
    assert isinstance(record.harness, kind)
    assert record.document()["harness"] == checked  # 1 == 1.0: whole numbers stay equal


def test_the_results_contract_keeps_the_harness_key_order() -> None:
    record = ResultRecord.model_validate({**IDENTITY, "status": "ok", "error": None,
                                          "harness": GOOD_RESULT})
    assert list(record.document()["harness"]) == list(GOOD_RESULT)


@pytest.mark.parametrize("raw, named", [
    (b'{"latency_ms": {"p50": NaN}}', "NaN"),
    (b'{"latency_ms": {"p90": -Infinity}}', "-Infinity"),
    (b'{"latency_ms": {"p90": 1e400}}', "1e400"),
    # A long number is named by its first 20 characters.
    (b'{"accuracy": 1234567890123456789e400}', "1234567890123456789e"),
])
def test_a_non_finite_number_from_a_device_is_refused_by_name(raw: bytes, named: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_untrusted_json(raw)
    assert str(refused.value) == f"device returned a non-finite number ({named})"


def test_a_whole_number_in_a_float_field_does_not_end_the_type_checks() -> None:
    """``load_ms: 3`` is a float measurement; the fields after it are still checked."""
    document = {**GOOD_RESULT, "load_ms": 3, "runs": "10"}
    with pytest.raises(ValueError) as refused:
        validate_harness_result(document)
    assert str(refused.value) == "harness result field 'runs' is missing or not an int"


def test_an_unknown_status_is_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(ValueError) as refused:
        validate_harness_result({**GOOD_RESULT, "status": "done"})
    assert str(refused.value) == ("harness result has status 'done' "
                                  "(expected 'ok', 'failed', 'skipped')")


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"ok"', b"3"])
def test_json_that_is_not_an_object_is_refused_saying_so(raw: bytes) -> None:
    with pytest.raises(ValueError) as refused:
        parse_untrusted_json(raw)
    assert str(refused.value) == "device returned JSON that is not an object"


def _forged(dotted: str, value: Any) -> dict[str, Any]:
    """GOOD_RESULT with one (possibly nested: ``latency_ms.p50``) field rewritten."""
    return with_field(GOOD_RESULT, dotted, value)


@pytest.mark.parametrize("document, reason", [
    # What issue 25's board claimed: every latency 0.001 ms.
    ({**GOOD_RESULT, "latency_ms": {key: 0.001 for key in GOOD_RESULT["latency_ms"]}},
     "device returned latency_ms.p50 0.001, but its 10 raw latencies give 1.005"),
    (_forged("latency_ms.p99", 1.5), "device returned latency_ms.p99 1.5, but its 10 raw "
                                     "latencies give 1.573"),
    (_forged("latency_ms.std", 0.0), "device returned latency_ms.std 0.0, but its 10 raw "
                                     "latencies give 0.198394"),
    (_forged("throughput_fps", 1e6), "device returned throughput_fps 1000000.0, but its 10 raw "
                                     "latencies give 917.431"),
    (_forged("timed_seconds", 0.001), "device returned timed_seconds 0.001, but its 10 raw "
                                      "latencies give 0.0109"),
    (_forged("latency_ci95_ms.p50", [0.1, 0.2]), "device returned latency_ci95_ms.p50 "
                                                 "[0.1, 0.2], but its 10 raw latencies give "
                                                 "[0.96, 1.3]"),
    # Its true lower bound alone: a shorter list must not pass as its first items.
    (_forged("latency_ci95_ms.p50", [0.96]), "device returned latency_ci95_ms.p50 [0.96]: not "
                                             "[low, high] with 0 <= low <= high"),
    (_forged("latency_ci95_ms.p90", [1.0, 1.6]), "device returned latency_ci95_ms.p90 "
                                                 "[1.0, 1.6], but its 10 raw latencies give None"),
    (_forged("timed_seconds", "0.01"), "device returned timed_seconds '0.01', but its 10 raw "
                                       "latencies give 0.0109"),
    ({key: value for key, value in GOOD_RESULT.items() if key != "latencies"},
     "harness result has no raw latencies ('latencies'): its statistics cannot be checked"),
])
def test_statistics_a_board_states_must_be_the_ones_its_raw_latencies_give(
        document: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        validate_harness_result(document)
    assert str(refused.value) == reason


@pytest.mark.parametrize("stated", [[0.96], [0.96, 1.3, 2.0], []])
def test_a_list_agrees_only_with_one_of_the_same_length(stated: list[float]) -> None:
    """The comparison itself, under the shape check that refuses such a list first: a
    prefix of the recomputed bounds (or a longer list) is no agreement (zip would stop
    at the shorter)."""
    from tasks.farm.protocol import _agrees

    assert _agrees([0.96, 1.3], [0.96, 1.3])
    assert not _agrees(stated, [0.96, 1.3])


def test_a_statistic_recomputed_elsewhere_may_differ_in_its_last_digits() -> None:
    """A board's NumPy may sum in another order: a relative 1e-9 is the same number."""
    p50 = GOOD_RESULT["latency_ms"]["p50"]
    assert validate_harness_result(_forged("latency_ms.p50", p50 * (1 + 1e-9)))
    with pytest.raises(ValueError, match="latency_ms.p50"):
        validate_harness_result(_forged("latency_ms.p50", p50 * (1 + 1e-5)))


def test_every_whole_count_below_400_images_is_accepted_even_when_its_share_does_not_round_trip(
        ) -> None:
    """k / n * n is not always k (1/49 * 49 is 0.999...): every share of a whole count of
    up to 399 images is a measurement, and half an image more is not."""
    from tasks.farm.protocol import _check_whole_count

    assert 1 / 49 * 49 != 1  # such shares exist (what an exact comparison would refuse)
    for total in range(1, 400):
        for correct in range(total + 1):
            _check_whole_count({"accuracy": correct / total, "accuracy_samples": total})
        for correct in (0, total // 2, total - 1):
            with pytest.raises(ValueError, match="not a whole number of images"):
                _check_whole_count({"accuracy": (correct + 0.5) / total,
                                    "accuracy_samples": total})


@pytest.mark.parametrize("accuracy, samples, reason", [
    # Issue 25's board: 0.999 on 360 images is 359.64 images.
    (0.999, 360, "device returned accuracy 0.999 on 360 images: 359.64 correct is not a "
                 "whole number of images"),
    (0.5, 3, "device returned accuracy 0.5 on 3 images: 1.5 correct is not a whole number "
             "of images"),
])
def test_an_accuracy_must_be_a_whole_count_of_correct_images(accuracy: float, samples: int,
                                                            reason: str) -> None:
    document = {**GOOD_RESULT, "accuracy": accuracy, "accuracy_samples": samples}
    with pytest.raises(ValueError) as refused:
        validate_harness_result(document)
    assert str(refused.value) == reason
    end_to_end = {"runs": 12, "latency_ms": GOOD_RESULT["latency_ms"], "throughput_fps": 900.0,
                  "accuracy": accuracy, "accuracy_samples": samples,
                  "stages_ms": {"decode": 0.5, "preprocess": 0.3, "infer": 0.2,
                                "postprocess": 0.01}}
    with pytest.raises(ValueError) as refused:
        validate_harness_result({**GOOD_RESULT, "end_to_end": end_to_end})
    assert str(refused.value) == reason.replace("accuracy", "end_to_end.accuracy")
    # What the harness computes, correct / samples, always passes (359 of 360: 0.99722...).
    for correct in range(samples + 1):
        assert validate_harness_result({**document, "accuracy": correct / samples,
                                        "end_to_end": {**end_to_end,
                                                       "accuracy": correct / samples}})


# ------------------------------------------------- every field, range and refusal (issue 27)
# Walked from the protocol's own tables, so that a field added to them is checked too.

from tasks.farm.protocol import (  # noqa: E402 - the tables the walks below read
    END_TO_END_FIELDS, END_TO_END_RANGES, END_TO_END_STAGES, HARNESS_STATUSES, LATENCY_FIELDS,
    LATENCY_ORDER, MAX_RESULT_BYTES, REQUIRED_OK_FIELDS)

# What each range reads as: a bound widened or narrowed (accuracy to 2, runs to 10^6, a
# throughput of 0 allowed) changes its line.
EXPECTED_RANGES = {"accuracy": "[0, 1]", "throughput_fps": "(0, inf)",
                   "peak_rss_mb": "[0, inf)", "load_ms": "[0, inf)",
                   "first_inference_ms": "[0, inf)", "runs": "[1, 100000]",
                   "accuracy_samples": "[1, inf)",
                   **{f"latency_ms.{key}": "[0, inf)" for key in LATENCY_FIELDS}}


def test_every_measurement_has_its_range_and_the_end_to_end_part_the_same_ones() -> None:
    assert {name: str(allowed) for name, allowed in OK_RANGES.items()} == EXPECTED_RANGES
    assert set(END_TO_END_RANGES) == set(EXPECTED_RANGES) - {
        "peak_rss_mb", "load_ms", "first_inference_ms"}
    assert all(END_TO_END_RANGES[name] is OK_RANGES[name] for name in END_TO_END_RANGES)
    assert LATENCY_ORDER == ("min", "p50", "p90", "p99", "max")
    # Every measurement with a range is a field whose type is checked first (a missing
    # one is named, never a KeyError), in the whole result and in its end-to-end part.
    for ranges, fields in ((OK_RANGES, REQUIRED_OK_FIELDS), (END_TO_END_RANGES,
                                                             END_TO_END_FIELDS)):
        assert {name.split(".")[0] for name in ranges} <= set(fields)
    assert set(END_TO_END_FIELDS) - {name.split(".")[0] for name in END_TO_END_RANGES} == {
        "stages_ms"}
    assert set(REQUIRED_OK_FIELDS) - {name.split(".")[0] for name in OK_RANGES} == {"runtime"}
    assert str(Range(0.5, 2.0, low_open=True)) == "(0.5, 2]"


def _zero_latencies() -> dict[str, Any]:
    """GOOD_RESULT with every latency 0: any one of them may move to a bound of its range
    without breaking their order."""
    return {**GOOD_RESULT, "latency_ms": {key: 0.0 for key in LATENCY_FIELDS}}


@pytest.mark.parametrize("name", list(OK_RANGES))
def test_each_range_takes_its_bounds_and_refuses_the_next_value_out_by_name(name: str) -> None:
    """Each bound of each range, from its own table: a closed bound is accepted, an open
    one and the next value past either refused, naming the field, value and range."""
    from tasks.farm.protocol import _check_ok_numbers

    allowed = OK_RANGES[name]
    whole = name in ("runs", "accuracy_samples")
    step = 1 if whole else 1e-9
    inside = [allowed.high] if allowed.high != math.inf else []
    outside = [allowed.low - step, *([allowed.high + step] if inside else [])]
    (inside if not allowed.low_open else outside).append(allowed.low)
    for value in inside:
        _check_ok_numbers(with_field(_zero_latencies(), name, int(value) if whole else value))
    for value in outside:
        value = int(value) if whole else value
        with pytest.raises(ValueError) as refused:
            _check_ok_numbers(with_field(_zero_latencies(), name, value))
        assert str(refused.value) == f"device returned {name} {value!r} outside {allowed}"


@pytest.mark.parametrize("name, kind", list(REQUIRED_OK_FIELDS.items()))
def test_each_required_field_missing_or_a_bool_is_refused_by_name_and_kind(
        name: str, kind: type) -> None:
    article = "an" if kind is int else "a"
    message = f"harness result field {name!r} is missing or not {article} {kind.__name__}"
    for document in ({key: value for key, value in GOOD_RESULT.items() if key != name},
                     {**GOOD_RESULT, name: True}):
        with pytest.raises(ValueError) as refused:
            validate_harness_result(document)
        assert str(refused.value) == message


@pytest.mark.parametrize("key", LATENCY_FIELDS)
def test_each_latency_statistic_missing_or_not_a_number_is_refused_by_name(key: str) -> None:
    for value in (None, True, "1.0"):
        with pytest.raises(ValueError) as refused:
            validate_harness_result(_forged(f"latency_ms.{key}", value))
        assert str(refused.value) == f"harness result field latency_ms.{key} is missing"


@pytest.mark.parametrize("position", range(len(LATENCY_ORDER) - 1))
def test_each_neighbouring_pair_of_ordered_latencies_swapped_is_refused(position: int) -> None:
    from tasks.farm.protocol import _check_ok_numbers

    latency = {key: float(rank) for rank, key in enumerate(LATENCY_ORDER)}
    latency.update(mean=1.0, std=0.5)
    low, high = LATENCY_ORDER[position], LATENCY_ORDER[position + 1]
    latency[low], latency[high] = latency[high], latency[low]
    with pytest.raises(ValueError) as refused:
        _check_ok_numbers({**GOOD_RESULT, "latency_ms": latency})
    shown = ", ".join(f"{key} {latency[key]!r}" for key in LATENCY_ORDER)
    assert str(refused.value) == (f"device returned latency_ms out of order ({shown}): "
                                  "min <= p50 <= p90 <= p99 <= max must hold")
    latency[low] = latency[high]  # equal neighbours are in order
    _check_ok_numbers({**GOOD_RESULT, "latency_ms": latency})


@pytest.mark.parametrize("status", [status for status in HARNESS_STATUSES if status != "ok"])
def test_every_not_ok_status_needs_an_error_text_and_nothing_else(status: str) -> None:
    assert validate_harness_result({"status": status, "error": ""}) == {"status": status,
                                                                        "error": ""}
    for error in (None, 3):
        with pytest.raises(ValueError) as refused:
            validate_harness_result({"status": status, "error": error})
        assert str(refused.value) == f"a {status} harness result has no 'error' text"


def test_a_document_exactly_at_the_size_limit_is_read_and_one_byte_more_is_refused() -> None:
    body = b'{"a": "' + b"x" * (MAX_RESULT_BYTES - 10) + b'"}'
    assert len(body) == MAX_RESULT_BYTES - 1
    assert parse_untrusted_json(body + b" ")["a"] == "x" * (MAX_RESULT_BYTES - 10)
    with pytest.raises(ValueError) as refused:
        parse_untrusted_json(body + b"  ")
    assert str(refused.value) == "device returned 1048577 bytes, more than 1048576"


END_TO_END = {"runs": 12, "latency_ms": GOOD_RESULT["latency_ms"], "throughput_fps": 900.0,
              "accuracy": 0.9, "accuracy_samples": 40,
              "stages_ms": {stage: 0.25 for stage in END_TO_END_STAGES}}


@pytest.mark.parametrize("name, kind", list(END_TO_END_FIELDS.items()))
def test_each_end_to_end_field_missing_is_refused_by_its_dotted_name(name: str,
                                                                     kind: type) -> None:
    part = {key: value for key, value in END_TO_END.items() if key != name}
    article = "an" if kind is int else "a"
    with pytest.raises(ValueError) as refused:
        validate_harness_result({**GOOD_RESULT, "end_to_end": part})
    assert str(refused.value) == (f"harness result field 'end_to_end.{name}' is missing or "
                                  f"not {article} {kind.__name__}")


@pytest.mark.parametrize("stage", END_TO_END_STAGES)
def test_each_stage_of_the_pipeline_must_be_there_as_milliseconds(stage: str) -> None:
    stages = END_TO_END["stages_ms"]
    assert validate_harness_result({**GOOD_RESULT, "end_to_end": {
        **END_TO_END, "stages_ms": {**stages, stage: 0}}})  # zero is a time
    message = ("harness result field 'end_to_end.stages_ms' is not the milliseconds of "
               "decode, preprocess, infer, postprocess")
    without = {key: value for key, value in stages.items() if key != stage}
    for bad in (without, {**without, f"{stage}_ms": 0.25}, {**stages, "network": 0.25}, *(
            {**stages, stage: value} for value in (-1e-9, True, "0.25", math.inf, math.nan))):
        with pytest.raises(ValueError) as refused:
            validate_harness_result({**GOOD_RESULT, "end_to_end": {**END_TO_END,
                                                                  "stages_ms": bad}})
        assert str(refused.value) == message


@pytest.mark.parametrize("field_name", ["runtimes", "runtime_versions"])
def test_each_runtime_table_of_a_probe_is_texts_under_fact_names(field_name: str) -> None:
    good = {"host": {"a" * 64: 1.5, "b": True}, "runtimes": {"tflite": "x"},
            "runtime_versions": {"tflite": "2.3"}}
    assert validate_probe(good) == good  # a name of 64 characters, any number or a flag
    for bad in ({"tflite": None}, {"a" * 65: "x"}, ["tflite"], None):
        with pytest.raises(ValueError) as refused:
            validate_probe({**good, field_name: bad})
        assert str(refused.value) == f"probe field {field_name!r} is not an object of texts"
    with pytest.raises(ValueError, match="^probe field 'host' is not a flat object"):
        validate_probe({**good, "host": {"a" * 65: 1}})


@pytest.mark.parametrize("task, checked", [(None, True), ("classification", True),
                                           ("detection", False), ("segmentation", True)])
def test_only_a_share_of_samples_must_be_a_whole_count(task: str | None, checked: bool) -> None:
    """A detector's mAP@0.5 (0.4387 on 60 images) is no share of images; an accuracy, an
    older harness's (no task) or an unknown kind's result still is."""
    from tasks.farm.protocol import _check_whole_count

    document = {"accuracy": 0.4387, "accuracy_samples": 60}
    if checked:
        with pytest.raises(ValueError, match="not a whole number of images"):
            _check_whole_count(document, task=task)
    else:
        _check_whole_count(document, task=task)
