"""The predictor in every release: the application's model, with its own pre-processing.

Runs on the board with the standard library, NumPy, Pillow (to decode images) and the
one runtime its release needs; ``harness.py`` beside it loads the artifact (the
benchmark's own loaders). Nothing else of edgeflow is needed. An application uses it
three ways, on raw images (PNG/JPEG of any size, or arrays):

    python predict.py IMAGE...                  # one JSON line per image
    python predict.py --serve --port 8080       # POST an image to http://127.0.0.1:8080/predict

    from predict import Model
    model = Model("<workdir>/app/current")
    model.predict(image_array)                  # {"class", "index", "score", "latency_ms"}

A release folder holds ``manifest.json`` (what the model is: variant, runtime, the
artifact's files and sha256, classes, the input it expects and how an image becomes
that input), the artifact, this file, ``preprocess.py``, ``harness.py``, ``releases.py`` and ``check/``:
the images and labels of the release's health check (``python predict.py --check``).

Pre-processing is ``preprocess.py`` beside this file, the very code ``prepare`` applied
to the training images: EXIF rotation, 16-bit grey scaled to 8 bits, the colour mode, a
bilinear resize to the model's size, pixels / 255. The variant's quantisation of the
input and its output is the harness's.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
# The health check times this many inferences at least (p90 of fewer is mostly noise).
CHECK_LATENCY_RUNS = 100
CHECK_WARMUP_RUNS = 10
# One-sided 95% bound: a check fails on accuracy only when its images show, with 95%
# confidence, an accuracy below the floor (fifty images cannot tell 0.70 from 0.72).
CHECK_Z = 1.645


def _beside(stem: str) -> Any:
    """``<stem>.py`` beside this file, loaded once per folder (two releases loaded in one
    process each keep their own)."""
    name = f"edgeflow_{stem}_" + hashlib.sha256(HERE.encode()).hexdigest()[:12]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{stem}.py"))
        assert spec is not None and spec.loader is not None, HERE
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _harness() -> Any:
    return _beside("harness")


_preprocess = _beside("preprocess")
ImageError = _preprocess.ImageError
to_model_input, image_from_array, decode_image = (
    _preprocess.to_model_input, _preprocess.image_from_array, _preprocess.decode_image)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


class Model:
    """The model of a release folder (``<workdir>/app/current`` is the one in use).

    Loading reads ``manifest.json``, checks every artifact file's sha256 (a file changed
    since the release is refused: ValueError naming it) and loads the artifact in its
    runtime with the device's threads and the variant's execution precision.
    """

    def __init__(self, release: str = HERE) -> None:
        self.folder = os.path.abspath(release)
        with open(os.path.join(self.folder, MANIFEST), encoding="utf-8") as handle:
            self.manifest: dict[str, Any] = json.load(handle)
        if self.manifest.get("manifest_version") != MANIFEST_VERSION:
            raise ValueError(f"{self.folder}: manifest version "
                             f"{self.manifest.get('manifest_version')!r}, this predictor reads "
                             f"{MANIFEST_VERSION}")
        for entry in self.manifest["files"]:
            actual = _harness().sha256_of(os.path.join(self.folder, entry["path"]))
            if actual != entry["sha256"]:
                raise ValueError(f"{entry['path']} in {self.folder} is not the released file "
                                 f"(sha256 {actual[:16]}... != {entry['sha256'][:16]}...)")
        self.classes: list[str] = list(self.manifest["classes"])
        self.spec: dict[str, Any] = self.manifest["spec"]
        shape = self.manifest["input"]
        self.height, self.width, self.color = shape["height"], shape["width"], shape["color"]
        self.fit = shape.get("fit", "squash")  # releases made before fit was a choice
        harness = _harness()
        self._harness = harness
        self.runner = harness.load_runner(
            self.manifest["runtime"], os.path.join(self.folder, self.manifest["artifact"]),
            int(self.manifest.get("threads", 1)),
            harness.runtime_options(self.spec, self.manifest.get("accelerators") or {}))

    def prepare(self, image: Any, channels: str = "rgb") -> np.ndarray:
        """``image`` (a PIL image, an array, encoded bytes or a file path) as model input;
        an array's colour channels are in ``channels`` order (``"bgr"`` for OpenCV)."""
        if isinstance(image, (bytes, bytearray)):
            image = decode_image(bytes(image))
        elif isinstance(image, (str, os.PathLike)):
            with open(image, "rb") as handle:
                image = decode_image(handle.read())
        elif isinstance(image, np.ndarray):
            image = image_from_array(image, channels)
        return to_model_input(image, self.height, self.width, self.color, self.fit)

    def logits(self, model_input: np.ndarray) -> np.ndarray:
        """Float logits for one prepared input (quantised in and out as the variant is)."""
        harness = self._harness
        raw = self.runner.infer(harness.quantize_input(model_input, self.spec["input"]))
        return harness.dequantize_output(raw, self.spec.get("output", {})).reshape(-1)

    def predict(self, image: Any, channels: str = "rgb") -> dict[str, Any]:
        """The class of one image: its name, index, softmax score, and the milliseconds
        the model took (pre-processing not included). An array is taken as RGB unless
        ``channels="bgr"`` (OpenCV's ``imread``/``VideoCapture`` frames)."""
        model_input = self.prepare(image, channels)
        start = time.perf_counter()
        logits = self.logits(model_input)
        latency_ms = (time.perf_counter() - start) * 1e3
        index = int(np.argmax(logits))
        return {"class": self.classes[index], "index": index,
                "score": round(float(_softmax(logits)[index]), 6),
                "latency_ms": round(latency_ms, 4)}

    def check(self) -> dict[str, Any]:
        """The release's health check on its ``check/`` images (manifest ``check``):
        accuracy through the whole path (decode, pre-process, infer) and p90 latency of
        the model. ``passed`` when the accuracy's one-sided 95% upper bound reaches the
        floor and the p90 is within the limit; ``reasons`` say what missed."""
        check = self.manifest["check"]
        folder = os.path.join(self.folder, check["folder"])
        inputs = [self.prepare(os.path.join(folder, name)) for name in check["images"]]
        predicted = [int(np.argmax(self.logits(x))) for x in inputs]
        correct = sum(int(p == label) for p, label in zip(predicted, check["labels"]))
        accuracy = correct / len(inputs)
        upper = wilson_upper(correct, len(inputs))
        for x in inputs[:CHECK_WARMUP_RUNS]:
            self.logits(x)
        latencies = []
        while len(latencies) < max(CHECK_LATENCY_RUNS, len(inputs)):
            x = self._harness.quantize_input(inputs[len(latencies) % len(inputs)],
                                             self.spec["input"])
            start = time.perf_counter_ns()
            self.runner.infer(x)
            latencies.append((time.perf_counter_ns() - start) / 1e6)
        p90 = float(self._harness.latency_summary(latencies)["latency_ms"]["p90"])
        reasons = []
        floor, limit = check.get("accuracy_floor"), check.get("max_latency_p90_ms")
        if floor is not None and upper < floor:
            reasons.append(f"accuracy {accuracy:.3f} on {len(inputs)} check images (95% upper "
                           f"bound {upper:.3f}) is below the floor {floor:.3f}")
        if limit is not None and p90 > limit:
            reasons.append(f"p90 latency {p90:.3f} ms is above the limit {limit:g} ms")
        return {"passed": not reasons, "reasons": reasons, "images": len(inputs),
                "accuracy": accuracy, "accuracy_upper": upper, "accuracy_floor": floor,
                "latency_p90_ms": p90, "max_latency_p90_ms": limit,
                "latency_runs": len(latencies), "predicted": predicted,
                "checked_at": time.time()}


def wilson_upper(successes: int, trials: int, z: float = CHECK_Z) -> float:
    """The one-sided upper bound of a binomial proportion (Wilson score)."""
    if trials == 0:
        return 1.0
    p = successes / trials
    centre = p + z * z / (2 * trials)
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return min(1.0, (centre + margin) / (1 + z * z / trials))


def _handler(model: Model, max_bytes: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "edgeflow-predict"

        def _answer(self, status: int, document: dict[str, Any]) -> None:
            body = (json.dumps(document) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/health":
                self._answer(404, {"error": "GET /health, or POST an image to /predict"})
                return
            manifest = model.manifest
            self._answer(200, {"status": "ok", "release": manifest.get("release_id"),
                               "variant": manifest["variant"], "classes": model.classes})

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/predict":
                self._answer(404, {"error": "POST an image to /predict"})
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._answer(411, {"error": "a Content-Length header is required"})
                return
            if length > max_bytes:
                self._answer(413, {"error": f"the image is {length} bytes, more than the "
                                            f"{max_bytes} allowed"})
                self.close_connection = True  # the body is not read
                return
            data = self.rfile.read(length)
            try:
                self._answer(200, model.predict(data))
            except ImageError as error:
                self._answer(400, {"error": str(error)})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # one line per request on stderr is the application's choice, not ours

    return Handler


def serve(model: Model, port: int, host: str = "127.0.0.1",
          max_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> HTTPServer:
    """An HTTP server for ``model`` (not started: ``serve_forever()``); one request at a
    time, bodies of at most ``max_bytes``."""
    return HTTPServer((host, port), _handler(model, max_bytes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify images with this release's model.")
    parser.add_argument("images", nargs="*", help="image files (PNG, JPEG...)")
    parser.add_argument("--model", default=HERE, help="release folder (default: this file's)")
    parser.add_argument("--serve", action="store_true", help="answer HTTP POSTs of images")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES)
    parser.add_argument("--check", action="store_true", help="run the release's health check")
    args = parser.parse_args(argv)
    if not (args.images or args.serve or args.check):
        parser.error("give image files, --serve or --check")
    model = Model(args.model)
    if args.check:
        result = model.check()
        print(json.dumps(result))
        return 0 if result["passed"] else 3
    if args.serve:
        server = serve(model, args.port, args.host, args.max_bytes)
        print(json.dumps({"serving": f"http://{args.host}:{server.server_address[1]}/predict"}),
              flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        return 0
    failed = 0
    for path in args.images:
        try:
            print(json.dumps({"image": path, **model.predict(path)}), flush=True)
        except (ImageError, OSError) as error:
            failed += 1
            print(json.dumps({"image": path, "error": str(error)}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
