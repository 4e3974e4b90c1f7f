"""tasks/device/predict.py: a release's files are checked before the predictor runs any
other code of its package (the predictor's health check, its CLI and ``Model`` run for
real on a released model in tests/tasks/test_release.py)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import release_folder

# No PYTHONPATH: the release's own code, as an application on a board runs it.
BOARD_ENV = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
RUNTIMES = "edgeflow_device/runtimes.py"


def missing(folder: Path) -> None:
    (folder / RUNTIMES).unlink()


def ran_before_the_check(folder: Path) -> None:
    # Code that would say so, were it run before the check that refuses it.
    path = folder / RUNTIMES
    path.write_text('raise RuntimeError("ran before the check")\n' + path.read_text())


DAMAGES = {"missing": (missing, r"is missing \(the release is incomplete\)"),
           "altered": (ran_before_the_check, r"is not the released file \(sha256 ")}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_missing_or_altered_module_of_the_package_is_named_before_any_is_run(
        tmp_path: Path, damage: str) -> None:
    """``python predict.py IMAGE``: one line naming the file, exit 2, no traceback;
    ``Model(folder)`` through the launcher: the ValueError naming it."""
    folder = release_folder(tmp_path / "release")
    subprocess.run([sys.executable, str(folder / "predict.py"), "--help"], env=BOARD_ENV,
                   capture_output=True, check=True, timeout=60)  # intact: it starts
    damage_of, says = DAMAGES[damage]
    damage_of(folder)
    expected = rf"{RUNTIMES} in {re.escape(str(folder))} {says}"
    run = subprocess.run([sys.executable, str(folder / "predict.py"), "image.png"], cwd="/",
                         env=BOARD_ENV, capture_output=True, text=True, timeout=60, check=False)
    assert (run.returncode, run.stdout) == (2, ""), run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert re.match(rf"predict.py: {expected}", run.stderr), run.stderr
    loaded = subprocess.run(
        [sys.executable, "-c", "from predict import Model\n"
                               f"try:\n    Model({str(folder)!r})\n"
                               "except ValueError as error:\n    print(error)\n"],
        cwd=folder, env=BOARD_ENV, capture_output=True, text=True, timeout=60, check=False)
    assert loaded.returncode == 0 and loaded.stderr == "", loaded.stderr
    assert re.match(expected, loaded.stdout), loaded.stdout


def test_the_names_of_the_pre_processing_load_when_asked_for_through_the_launcher(
        tmp_path: Path) -> None:
    """``from predict import ImageError`` works as it did, though the pre-processing is
    no longer imported at the predictor's load."""
    folder = release_folder(tmp_path / "release")
    said = subprocess.run(
        [sys.executable, "-c", "import sys, predict\n"
                               "print('edgeflow_device.preprocess' in sys.modules)\n"
                               "from predict import ImageError, to_model_input\n"
                               "print(ImageError.__module__, to_model_input.__module__)\n"],
        cwd=folder, env=BOARD_ENV, capture_output=True, text=True, timeout=60, check=False)
    assert said.returncode == 0, said.stderr
    assert said.stdout.split() == ["False", "edgeflow_device.preprocess",
                                   "edgeflow_device.preprocess"]


def checked(labels: list[int], predicted: list[int], floor: float | None,
            limit: float | None, p90: float) -> dict:
    """``Model.check`` on a model whose answers and timed p90 are known: it predicts
    ``predicted`` for the check images labelled ``labels`` and its runs' p90 is ``p90``."""
    from types import SimpleNamespace

    from tasks.device import predict
    from tasks.device.kinds.classification import KIND

    model = predict.Model.__new__(predict.Model)
    model.folder = "/release"
    model.manifest = {"check": {"folder": "check", "images": [f"{i}.png" for i in
                                                              range(len(labels))],
                                "labels": labels, "accuracy_floor": floor,
                                "max_latency_p90_ms": limit}}
    model.spec = {"input": {}}
    model.kind = KIND
    answers = {f"/release/check/{i}.png": answer for i, answer in enumerate(predicted)}
    model.prepare = lambda path: answers[path]
    model.logits = lambda answer: np.eye(3)[answer]
    model._tensors = SimpleNamespace(quantize_input=lambda x, spec: x)
    model.runner = SimpleNamespace(infer=lambda x: x)
    model._latency = SimpleNamespace(latency_summary=lambda runs: {"latency_ms": {"p90": p90}})
    return model.check()


# 17 of 20 right: accuracy 0.85, its one-sided 95% upper bound (z 1.645) 0.938.
LABELS, PREDICTED = [0, 1, 2, 0] * 5, [0, 1, 2, 0] * 4 + [0, 0, 0, 1]


def test_the_health_check_judges_the_accuracy_floor_by_the_upper_bound_reached_exactly() -> None:
    """The floor is met by the score's upper bound, not the score: a floor between the
    two passes; the bound equal to the floor passes; a floor a hair above it fails, with
    the figures in the reason."""
    from tasks.core.accuracy import wilson_interval

    upper = wilson_interval(17, 20, 1.645)[1]
    assert 0.85 < 0.9 < upper < 0.95
    between = checked(LABELS, PREDICTED, 0.9, None, 1.0)
    assert between["passed"] and between["reasons"] == []
    assert (between["accuracy"], between["accuracy_upper"], between["accuracy_floor"]) == (
        0.85, upper, 0.9)
    assert checked(LABELS, PREDICTED, upper, None, 1.0)["passed"]
    above = checked(LABELS, PREDICTED, 0.95, None, 1.0)
    assert not above["passed"]
    assert above["reasons"] == [f"accuracy 0.850 on 20 check images (95% upper bound "
                                f"{upper:.3f}) is below the floor 0.950"]
    # All right reaches a floor of 1.0 (the bound is exactly 1).
    assert checked(LABELS, LABELS, 1.0, None, 1.0)["passed"]


def test_the_health_check_floor_and_latency_limit_each_bind_alone() -> None:
    """Accuracy floor and p90 limit are separate: each one fails the check with the other
    met, a p90 equal to the limit passes, and both missing give both reasons."""
    limit_only = checked(LABELS, PREDICTED, 0.9, 5.0, 5.5)
    assert not limit_only["passed"]
    assert limit_only["reasons"] == ["p90 latency 5.500 ms is above the limit 5 ms"]
    assert (limit_only["latency_p90_ms"], limit_only["max_latency_p90_ms"]) == (5.5, 5.0)
    assert checked(LABELS, PREDICTED, 0.9, 5.0, 5.0)["passed"]
    floor_only = checked(LABELS, PREDICTED, 0.95, 5.0, 4.0)
    assert [reason.split(" ")[0] for reason in floor_only["reasons"]] == ["accuracy"]
    both = checked(LABELS, PREDICTED, 0.95, 5.0, 5.5)
    assert [reason.split(" ")[0] for reason in both["reasons"]] == ["accuracy", "p90"]
    # No floor and no limit: nothing to miss, whatever the score and the p90.
    assert checked(LABELS, [1] * 20, None, None, 1e9)["passed"]


def test_the_health_check_passes_every_count_exactly_when_its_upper_bound_reaches_the_floor(
        ) -> None:
    """For every count of right answers on 20 check images: a floor equal to the score's
    one-sided upper bound (z = CHECK_Z, not the two-sided 1.96) passes and the next float
    above it fails; the score itself, the two-sided bound or the lower one would put some
    count on the wrong side. The p90 limit likewise: equal passes, a hair below fails."""
    import math

    from tasks.core.accuracy import wilson_interval
    from tasks.device.predict import CHECK_Z

    wrong = [(label + 1) % 3 for label in LABELS]
    for correct in range(len(LABELS) + 1):
        predicted = LABELS[:correct] + wrong[correct:]
        upper = wilson_interval(correct, len(LABELS), CHECK_Z)[1]
        at = checked(LABELS, predicted, upper, 4.0, 4.0)
        assert (at["passed"], at["reasons"]) == (True, []), correct
        assert (at["accuracy"], at["accuracy_upper"]) == (correct / len(LABELS), upper)
        if upper < 1.0:
            above = math.nextafter(upper, 2.0)
            missed = checked(LABELS, predicted, above, 4.0, 4.0)
            assert missed["reasons"] == [
                f"accuracy {correct / len(LABELS):.3f} on 20 check images (95% upper bound "
                f"{upper:.3f}) is below the floor {above:.3f}"], correct
    slow = checked(LABELS, LABELS, 1.0, math.nextafter(4.0, 0.0), 4.0)
    assert slow["reasons"] == [f"p90 latency 4.000 ms is above the limit "
                               f"{math.nextafter(4.0, 0.0):g} ms"]


@pytest.mark.parametrize(("images", "runs"), [(20, 100), (100, 100), (130, 130)])
def test_the_health_check_times_at_least_its_minimum_runs_and_every_image(images: int,
                                                                         runs: int) -> None:
    """The p90 comes from the larger of CHECK_LATENCY_RUNS (100) and the number of check
    images: 20 images are timed 100 times over, 130 images once each."""
    labels = [index % 3 for index in range(images)]
    assert checked(labels, labels, None, None, 1.0)["latency_runs"] == runs


# In-process tests of the CLI and the HTTP contract (the subprocess tests above and in
# tests/tasks/test_release.py run the same code where mutation testing cannot reach it).


class Clock:
    """A stand-in for the predictor's ``time`` module: each reading ``step`` later."""

    def __init__(self, step_ns: int) -> None:
        self.now_ns, self.step_ns = 0, step_ns

    def perf_counter_ns(self) -> int:
        self.now_ns += self.step_ns
        return self.now_ns

    def perf_counter(self) -> float:
        return self.perf_counter_ns() / 1e9

    def time(self) -> float:
        return 1234.5

    def monotonic(self) -> float:
        return time.monotonic()


def test_the_health_check_times_at_least_100_runs_cycling_its_images_in_milliseconds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Warm-up on the first 10 images, then max(100, images) timed runs over the images
    in turn, each timed in ms (ns / 1e6); the result names each figure in its own field."""
    from types import SimpleNamespace

    from tasks.device import predict
    from tasks.device.kinds.classification import KIND

    def run(images: int) -> tuple[dict, list, list, list]:
        clock = Clock(2_500_000)  # 2.5 ms between readings
        monkeypatch.setattr(predict, "time", clock)
        labels = [i % 3 for i in range(images)]
        model = predict.Model.__new__(predict.Model)
        model.folder = "/release"
        model.manifest = {"check": {"folder": "check",
                                    "images": [f"{i}.png" for i in range(images)],
                                    "labels": labels, "accuracy_floor": 0.25,
                                    "max_latency_p90_ms": 7.0}}
        model.spec = {"input": {"scale": 1}}
        model.kind = KIND
        logits_of, inferred, summarised = [], [], []
        model.prepare = lambda path: int(path.split("/")[-1].split(".")[0])
        model.logits = lambda x: logits_of.append(x) or np.eye(3)[x % 3]
        quantized = []
        model._tensors = SimpleNamespace(
            quantize_input=lambda x, spec: quantized.append(spec) or x)
        model.runner = SimpleNamespace(infer=inferred.append)
        model._latency = SimpleNamespace(latency_summary=lambda runs: summarised.append(
            list(runs)) or {"latency_ms": {"p90": 3.0, "p50": 1.0}})
        return model.check(), logits_of, inferred, summarised + [quantized]

    result, logits_of, inferred, (latencies, quantized) = run(20)
    assert logits_of == list(range(20)) + list(range(10))  # each scored, then 10 warm-ups
    assert inferred == [i % 20 for i in range(100)]
    assert quantized == [{"scale": 1}] * 100
    assert latencies == [2.5] * 100
    assert result == {"passed": True, "reasons": [], "images": 20, "accuracy": 1.0,
                      "accuracy_upper": 1.0, "accuracy_floor": 0.25, "latency_p90_ms": 3.0,
                      "max_latency_p90_ms": 7.0, "latency_runs": 100,
                      "predicted": [i % 3 for i in range(20)], "checked_at": 1234.5}
    result, logits_of, inferred, (latencies, _) = run(130)
    assert logits_of == list(range(130)) + list(range(10))  # warm-up: 10, not all
    assert inferred == list(range(130)) and len(latencies) == 130
    assert (result["latency_runs"], result["images"]) == (130, 130)


def test_a_prediction_is_the_kinds_answer_and_the_models_milliseconds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.device import predict
    from tasks.device.kinds.classification import KIND

    monkeypatch.setattr(predict, "time", Clock(1_234_567))  # 1.234567 ms
    model = predict.Model.__new__(predict.Model)
    model.kind, model.classes, model.spec = KIND, ["cat", "dog", "owl"], {}
    model.picture = lambda image, channels: image
    model.prepare = lambda image, channels: {"rgb": 2, "bgr": 0}[channels]
    model.logits = lambda x: np.eye(3)[x] * 5
    answer = model.predict("image", channels="bgr")
    assert answer == {**KIND.answer(np.eye(3)[0] * 5, model.classes), "latency_ms": 1.2346}
    assert answer["class"] == "cat" and model.predict("image")["class"] == "owl"


class FakeModel:
    """What ``main`` and the server use of a Model: made by ``main`` from ``--model``."""

    made: list[str] = []
    passed = True

    class image_error(ValueError):  # noqa: N801 - Model.image_error's name
        pass

    def __init__(self, folder: str) -> None:
        if folder == "broken":
            raise ValueError("manifest.json in broken is not the released file")
        FakeModel.made.append(folder)
        self.manifest = {"variant": "tflite-int8", "release_id": "r7"}
        self.classes = ["cat", "dog"]

    def check(self) -> dict:
        return {"passed": self.passed, "reasons": [] if self.passed else ["slow"]}

    def predict(self, image: Any) -> dict:
        if image in ("bad.png", b"bad"):
            raise self.image_error("not an image")
        if image == "gone.png":
            raise FileNotFoundError(2, "No such file", image)
        return {"class": "dog", "index": 1, "size": len(image)}


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> type[FakeModel]:
    from tasks.device import predict

    monkeypatch.setattr(predict, "Model", FakeModel)
    monkeypatch.setattr(FakeModel, "made", [])
    return FakeModel


def test_main_needs_something_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.device import predict

    with pytest.raises(SystemExit) as refused:
        predict.main([])
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "error: give image files, --serve or --check")


@pytest.mark.parametrize(("option", "text", "value"), [
    ("--timeout", "0.5", 0.5), ("--max-bytes", "1", 1), ("--max-connections", "1", 1)])
def test_main_takes_the_least_positive_limit_and_refuses_zero_or_less(
        option: str, text: str, value: float, fake_model: type[FakeModel],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.device import predict

    given: list[tuple] = []
    monkeypatch.setattr(predict, "serve", lambda *args: given.append(args) or Server())
    assert predict.main(["--serve", option, text]) == 0
    names = ("--max-bytes", "--timeout", "--max-connections")
    assert given[0][3 + names.index(option)] == value
    assert type(given[0][3 + names.index(option)]) is type(value)
    for refused_text in ("0", "-1"):
        with pytest.raises(SystemExit) as refused:
            predict.main(["--serve", option, refused_text])
        assert refused.value.code == 2
        assert (f"argument {option}: must be more than 0, not {refused_text}"
                in capsys.readouterr().err)


class Server:
    address = ("0.0.0.0", 40123)

    @property
    def server_address(self) -> tuple[str, int]:
        return self.address

    def serve_forever(self) -> None:
        raise KeyboardInterrupt


def test_main_serves_on_the_options_given_and_says_where(
        fake_model: type[FakeModel], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Every option reaches ``serve`` in its place; the URL printed has the port the
    server bound (``--port 0``: a free one), and Ctrl-C ends it with 0."""
    from tasks.device import predict

    given: list[tuple] = []
    monkeypatch.setattr(predict, "serve", lambda *args: given.append(args) or Server())
    assert predict.main(["--serve", "--model", "/rel", "--host", "0.0.0.0", "--port", "0",
                         "--max-bytes", "4097", "--timeout", "2.5",
                         "--max-connections", "3"]) == 0
    (model, *rest), = given
    assert isinstance(model, FakeModel) and fake_model.made == ["/rel"]
    assert rest == [0, "0.0.0.0", 4097, 2.5, 3]
    assert json.loads(capsys.readouterr().out) == {"serving": "http://0.0.0.0:40123/predict"}
    given.clear()
    assert predict.main(["--serve"]) == 0
    assert given[0][1:] == (8080, "127.0.0.1", predict.DEFAULT_MAX_REQUEST_BYTES,
                            predict.DEFAULT_REQUEST_TIMEOUT_SECONDS,
                            predict.DEFAULT_MAX_CONNECTIONS)
    assert (predict.DEFAULT_MAX_REQUEST_BYTES, predict.DEFAULT_REQUEST_TIMEOUT_SECONDS,
            predict.DEFAULT_MAX_CONNECTIONS) == (10 * 1024 * 1024, 10.0, 16)
    assert fake_model.made[-1] == predict.RELEASE  # the release the predictor is in


@pytest.mark.parametrize("passed", [True, False])
def test_main_check_prints_the_result_and_exits_0_or_3(
        passed: bool, fake_model: type[FakeModel], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.device import predict

    monkeypatch.setattr(FakeModel, "passed", passed)
    # --check wins over images and --serve given with it
    assert predict.main(["--check", "--serve", "a.png", "--model", "/rel"]) == (0 if passed
                                                                               else 3)
    assert json.loads(capsys.readouterr().out) == {"passed": passed,
                                                   "reasons": [] if passed else ["slow"]}
    assert fake_model.made == ["/rel"]


def test_main_names_a_release_it_cannot_load_in_one_line_and_exits_2(
        fake_model: type[FakeModel], capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.device import predict

    for argv in (["--check"], ["--serve"], ["a.png"]):
        assert predict.main([*argv, "--model", "broken"]) == 2
        assert capsys.readouterr() == ("", "predict.py: manifest.json in broken is not the "
                                           "released file\n")


def test_main_answers_each_image_in_a_line_and_exits_1_when_any_failed(
        fake_model: type[FakeModel], capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.device import predict

    assert predict.main(["a.png", "bad.png", "gone.png", "dd.png"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"image": "a.png", "class": "dog", "index": 1, "size": 5},
                     {"image": "bad.png", "error": "not an image"},
                     {"image": "gone.png", "error": "[Errno 2] No such file: 'gone.png'"},
                     {"image": "dd.png", "class": "dog", "index": 1, "size": 6}]
    assert predict.main(["a.png", "dd.png"]) == 0
    assert predict.main(["bad.png"]) == 1


@pytest.fixture
def server(fake_model: type[FakeModel]) -> Iterator[tuple[str, int]]:
    """The predictor's HTTP server, in this process, for a fake model: at most 64 bytes
    a body, 5 s to arrive, 2 connections at once."""
    from tasks.device import predict

    running = predict.serve(FakeModel("/rel"), 0, max_bytes=64, timeout=5.0,
                            max_connections=2)
    thread = threading.Thread(target=running.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield running.server_address[:2]
    finally:
        running.shutdown()
        running.server_close()
        thread.join(10)


def exchange(address: tuple[str, int], request: bytes, half_close: bool = False
             ) -> tuple[int, dict[str, str], dict]:
    """Send ``request`` raw; the status, headers and JSON body of the answer."""
    with socket.create_connection(address, timeout=10) as connection:
        connection.sendall(request)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    assert int(headers["Content-Length"]) == len(body)
    assert headers["Content-Type"] == "application/json" and body.endswith(b"\n")
    return int(status_line.split()[1]), headers, json.loads(body)


def post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: board", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_the_server_answers_health_and_predictions_with_their_exact_fields(
        server: tuple[str, int]) -> None:
    health = b"GET /health HTTP/1.1\r\nHost: board\r\nConnection: close\r\n\r\n"
    assert exchange(server, health)[::2] == (200, {"status": "ok", "release": "r7",
                                                   "variant": "tflite-int8",
                                                   "classes": ["cat", "dog"]})
    elsewhere = b"GET /predict HTTP/1.1\r\nHost: board\r\nConnection: close\r\n\r\n"
    assert exchange(server, elsewhere)[::2] == (
        404, {"error": "GET /health, or POST an image to /predict"})
    body = b"i" * 64  # exactly --max-bytes is read
    assert exchange(server, post("/predict", body, "Content-Length: 64"))[::2] == (
        200, {"class": "dog", "index": 1, "size": 64})
    assert exchange(server, post("/predict", b"bad", "Content-Length: 3"))[::2] == (
        400, {"error": "not an image"})
    assert exchange(server, post("/health", b"bad", "Content-Length: 3"))[::2] == (
        404, {"error": "POST an image to /predict"})


@pytest.mark.parametrize(("headers", "sent", "status", "error"), [
    (["Content-Length: 65"], b"i" * 65, 413, "the image is 65 bytes, more than the 64 allowed"),
    ([], b"", 411, "a Content-Length header is required"),
    (["Content-Length:  "], b"", 411, "a Content-Length header is required"),
    (["Transfer-Encoding: chunked"], b"3\r\nabc\r\n0\r\n\r\n", 411,
     "send the image with a Content-Length header (a chunked body is not read)"),
    (["Content-Length: -3"], b"abc", 400, "Content-Length must be a whole number of bytes, "
                                          "not '-3'"),
    (["Content-Length: 3.0"], b"abc", 400, "Content-Length must be a whole number of "
                                           "bytes, not '3.0'"),
    (["Content-Length: 10"], b"12345", 408,
     "the request's 10 bytes did not arrive within 5 s (5 did)"),
], ids=["too-big", "no-length", "blank-length", "chunked", "negative", "not-whole", "short"])
def test_the_server_refuses_each_bad_request_with_its_status_and_reason(
        server: tuple[str, int], headers: list[str], sent: bytes, status: int,
        error: str) -> None:
    assert exchange(server, post("/predict", sent, *headers), half_close=True)[::2] == (
        status, {"error": error})


def test_a_connection_past_the_limit_is_answered_503_at_once(server: tuple[str, int]) -> None:
    """Two connections hold both slots; a third is told to come back in a second."""
    held = [socket.create_connection(server, timeout=10) for _ in range(2)]
    try:
        time.sleep(0.2)  # both accepted and handed a slot
        with socket.create_connection(server, timeout=10) as third:
            received = b""
            while chunk := third.recv(65536):
                received += chunk
        head, body = received.split(b"\r\n\r\n", 1)
        assert head.split(b"\r\n")[:2] == [b"HTTP/1.0 503 Service Unavailable",
                                           b"Retry-After: 1"]
        assert json.loads(body) == {"error": "busy: too many connections, try again"}
    finally:
        for connection in held:
            connection.close()


def test_a_request_not_arrived_by_its_deadline_has_its_reading_cut() -> None:
    """A connection timed from ``start``: stopped in time, ``stop`` says True and it is
    left alone; one past its deadline is shut for reading and ``stop`` says False."""
    from tasks.device import predict

    deadlines = predict._Deadlines(0.3)
    try:
        early, early_peer = socket.socketpair()
        late, late_peer = socket.socketpair()
        deadlines.start(early)
        deadlines.start(late)
        assert deadlines.stop(early) is True
        time.sleep(0.6)
        late.settimeout(1)
        assert late.recv(10) == b""  # shut: the handler's read returns at once
        assert deadlines.stop(late) is False
        early_peer.sendall(b"x")
        early.settimeout(1)
        assert early.recv(10) == b"x"
    finally:
        deadlines.close()
        for end in (early, early_peer, late, late_peer):
            end.close()


def test_prepare_reads_each_kind_of_image_into_the_model_input(tmp_path: Path) -> None:
    """Encoded bytes and a file's bytes are decoded, an array is taken in its channel
    order, anything else (a PIL image) as it is; each then sized for the model."""
    from types import SimpleNamespace

    from tasks.device import predict

    model = predict.Model.__new__(predict.Model)
    model.height, model.width, model.color, model.fit = 12, 16, "rgb", "letterbox"
    model._preprocess = SimpleNamespace(
        decode_image=lambda data: ("decoded", data),
        image_from_array=lambda array, channels: ("array", array.tolist(), channels),
        upright=lambda image: image,
        to_model_input=lambda image, *size: (image, *size))
    path = tmp_path / "frame.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nframe")
    sized = (12, 16, "rgb", "letterbox")
    assert model.prepare(b"abc") == (("decoded", b"abc"), *sized)
    assert model.prepare(bytearray(b"abc")) == (("decoded", b"abc"), *sized)
    assert model.prepare(str(path)) == (("decoded", b"\x89PNG\r\n\x1a\nframe"), *sized)
    assert model.prepare(path) == (("decoded", b"\x89PNG\r\n\x1a\nframe"), *sized)
    assert model.prepare(np.array([1, 2]), "bgr") == (("array", [1, 2], "bgr"), *sized)
    assert model.prepare(7) == (7, *sized)
