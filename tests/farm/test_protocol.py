"""The device protocol on documents alone (no device): how ranges read, what a probe must
be, and that whatever the protocol accepts from a device, the results contract the later
steps read accepts too (a device must never be able to break the benchmark step's own
writing). The protocol's refusals with their exact messages are tested where a device
sends them: tests/tasks/test_benchmark.py."""

from __future__ import annotations

import json
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
