"""The predictor in every release: the application's model, with its own pre-processing.

Runs on the board with the standard library, NumPy, Pillow (to decode images) and the
one runtime its release needs; the modules beside it in its package load the artifact
(the benchmark's own loaders, ``runtimes``) and quantise its input and output
(``tensors``). Nothing else of edgeflow is needed. An application uses it three ways, on
raw images (PNG/JPEG of any size, or arrays):

    python predict.py IMAGE...                  # one JSON line per image
    python predict.py IMAGE --draw out.png      # a detector's boxes drawn on the image
    python predict.py --serve --port 8080       # POST an image to http://127.0.0.1:8080/predict

    from predict import Model
    model = Model("<workdir>/app/current")
    model.predict(image_array)                  # {"class", "index", "score", "latency_ms"}

What a prediction answers, and how the health check scores, is the variant's kind of task
(``kinds/`` of this package; the answer above is classification's). A detector answers
``{"detections": [{"class", "index", "score", "box"}], "latency_ms"}``, best first, each
``box`` ``[x0, y0, x1, y1]`` in the pixels of the image given (upright: after its EXIF
rotation), mapped back through the pre-processing's resize or letterbox
(``preprocess.boxes_in_image``); ``--draw`` draws them (``draw.py``).

A release folder holds ``manifest.json`` (what the model is: variant, runtime, every
file of the release with its sha256, classes, the input it expects and how an image
becomes that input), ``manifest.sha256`` (the manifest's own sha256), the artifact,
``predict.py``, ``releases.py``, ``edgeflow_device/`` and ``check/``: the images and
labels of the release's health check (``python predict.py --check``). ``edgeflow_device/``
is the device code's package (this module, ``preprocess.py``, the harness's modules, the
kinds of task in ``kinds/`` with the variant's among them); ``predict.py`` beside it is
the launcher (``tasks/device/launch.py``) that runs this module or gives its names to
``from predict import Model``. A model loads only from a folder whose files are all the
released ones (:func:`verify_release`).

``--serve`` answers each connection in a thread of its own, at most ``--max-connections``
at once (more get 503 at once), inferences one at a time; a request must arrive whole
within ``--timeout`` seconds (an idle connection, or a client that announces more than it
sends, is cut then) and announce its size: a body is read only up to ``--max-bytes``.

Pre-processing is ``preprocess.py`` beside this file, the very code ``prepare`` applied
to the training images: EXIF rotation, 16-bit grey scaled to 8 bits, the colour mode, a
bilinear resize to the model's size, pixels / 255. The variant's quantisation of the
input and its output is the harness's.

The check runs first. What runs before :func:`verify_release` cannot be checked by it, so
that is kept to the code that holds the check: the launcher, the package's
``__init__.py`` (which imports nothing) and this module, which imports the standard
library and NumPy only. The package's other modules (pre-processing, runtimes, tensors,
latency, the kinds of task) are imported only once a release is verified (:class:`Model`,
:func:`_package_module`), so one that is missing or edited is named by the check
(``predict.py: edgeflow_device/runtimes.py in DIR is missing (the release is
incomplete)``, exit 2), never run or failed on before it. The three files that hold the
check are in the manifest too: an edit that leaves them loadable is refused like any
other; one that does not is what no check of a file by itself can see (``edgeflow
status`` names it as drift from here).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: see "The check runs first" above
    from .spec import VariantSpec

HERE = os.path.dirname(os.path.abspath(__file__))
# The release folder: the one that holds this package (``<release>/edgeflow_device/``).
RELEASE = os.path.dirname(HERE)
MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest.sha256"  # the manifest's sha256, as `sha256sum` writes it
MANIFEST_VERSION = 2
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
DEFAULT_REQUEST_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_CONNECTIONS = 16
# The health check times this many inferences at least (p90 of fewer is mostly noise).
CHECK_LATENCY_RUNS = 100
CHECK_WARMUP_RUNS = 10
# One-sided 95% bound: a check fails on accuracy only when its images show, with 95%
# confidence, an accuracy below the floor (fifty images cannot tell 0.70 from 0.72). The
# upper end of the two-sided 90% interval at this z.
CHECK_Z = 1.645


# Names this module gives from the pre-processing (``predict.ImageError``...), imported
# when first asked for, not at load: see "The check runs first" above.
_PREPROCESS_NAMES = ("ImageError", "to_model_input", "image_from_array", "decode_image")


def _package_module(name: str) -> ModuleType:
    """The module ``name`` of this package, imported when first needed: only once a
    release is verified (what loads before the check is kept to the code holding it)."""
    return importlib.import_module(f".{name}", __package__)


def __getattr__(name: str) -> Any:
    if name in _PREPROCESS_NAMES:
        return getattr(_package_module("preprocess"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _sha256(path: str) -> str:
    # Not the harness's sha256_of (runtimes.py): the check must not run code from a file
    # it checks (any module of the package may be the file that was edited or deleted).
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_release(folder: str) -> dict[str, Any]:
    """The manifest of the release in ``folder``, once every file of it is the released
    one; ValueError naming the first file that differs or is missing.

    The manifest lists every file of the release (artifact, the launcher, this package's
    modules, the manager, the check images) with its sha256. It
    cannot hold its own hash, so ``manifest.sha256`` beside it does: a manifest edited by
    hand (class names, the check's floor) no longer matches it. One rewritten together
    with its digest is still seen by the orchestrator, which recorded the manifest's
    sha256 when it released it: ``edgeflow status`` shows it as drift."""
    try:
        with open(os.path.join(folder, MANIFEST), "rb") as handle:
            data = handle.read()
        manifest = json.loads(data)
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder} has no readable {MANIFEST}: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        version = manifest.get("manifest_version") if isinstance(manifest, dict) else None
        raise ValueError(f"{folder}: manifest version {version!r}, this predictor reads "
                         f"{MANIFEST_VERSION}")
    try:
        with open(os.path.join(folder, MANIFEST_DIGEST), encoding="utf-8") as handle:
            recorded = handle.read().split()[:1]
    except OSError:
        recorded = []
    actual = hashlib.sha256(data).hexdigest()
    if recorded != [actual]:
        raise ValueError(f"{MANIFEST} in {folder} is not the released file (sha256 "
                         f"{actual[:16]}... is not the one in {MANIFEST_DIGEST})")
    for entry in manifest["files"]:
        try:
            actual = _sha256(os.path.join(folder, entry["path"]))
        except OSError:
            raise ValueError(f"{entry['path']} in {folder} is missing (the release is "
                             "incomplete)") from None
        if actual != entry["sha256"]:
            raise ValueError(f"{entry['path']} in {folder} is not the released file "
                             f"(sha256 {actual[:16]}... != {entry['sha256'][:16]}...)")
    return manifest


class Model:
    """The model of a release folder (``<workdir>/app/current`` is the one in use).

    Loading checks every file of the release against its manifest
    (:func:`verify_release`: a file changed since the release is refused, ValueError
    naming it) and loads the artifact in its runtime with the device's threads and the
    variant's execution precision. One model may serve several threads: its inferences
    run one at a time (not every runtime's interpreter is thread-safe).
    """

    def __init__(self, release: str = RELEASE) -> None:
        self.folder = os.path.abspath(release)
        self.manifest: dict[str, Any] = verify_release(self.folder)
        # Only now the package's other modules: their files are the ones just verified.
        self._preprocess = _package_module("preprocess")
        self._tensors = _package_module("tensors")
        self._latency = _package_module("latency")
        runtimes = _package_module("runtimes")
        self._lock = threading.Lock()
        self.classes: list[str] = list(self.manifest["classes"])
        self.spec: VariantSpec = self.manifest["spec"]
        shape = self.manifest["input"]
        self.height, self.width, self.color = shape["height"], shape["width"], shape["color"]
        self.fit = shape.get("fit", "squash")  # releases made before fit was a choice
        self.kind = _package_module("kinds").of_spec(self.spec)
        self.runner = runtimes.load_runner(
            self.manifest["runtime"], os.path.join(self.folder, self.manifest["artifact"]),
            int(self.manifest.get("threads", 1)),
            runtimes.runtime_options(self.spec, self.manifest.get("accelerators") or {}))

    @property
    def image_error(self) -> type[ValueError]:
        """What :meth:`prepare` and :meth:`predict` raise for what is no image
        (``predict.ImageError``, the pre-processing's)."""
        return self._preprocess.ImageError  # type: ignore[no-any-return]

    def picture(self, image: Any, channels: str = "rgb") -> Any:
        """``image`` (a PIL image, an array, encoded bytes or a file path) as an upright
        PIL image (its EXIF rotation applied): what the model sees, brought to its size,
        and what its boxes are placed in. An array's colour channels are in ``channels``
        order (``"bgr"`` for OpenCV)."""
        preprocess = self._preprocess
        if isinstance(image, (bytes, bytearray)):
            image = preprocess.decode_image(bytes(image))
        elif isinstance(image, (str, os.PathLike)):
            with open(image, "rb") as handle:
                image = preprocess.decode_image(handle.read())
        elif isinstance(image, np.ndarray):
            image = preprocess.image_from_array(image, channels)
        return preprocess.upright(image)

    def prepare(self, image: Any, channels: str = "rgb") -> np.ndarray:
        """``image`` (as :meth:`picture` takes it) as model input."""
        return self._preprocess.to_model_input(self.picture(image, channels), self.height,
                                               self.width, self.color, self.fit)

    def logits(self, model_input: np.ndarray) -> np.ndarray:
        """Float logits for one prepared input (quantised in and out as the variant is)."""
        quantized = self._tensors.quantize_input(model_input, self.spec["input"])
        with self._lock:
            raw = self.runner.infer(quantized)
        return self._tensors.dequantize_output(raw, self.spec.get("output", {})).reshape(-1)

    def predict(self, image: Any, channels: str = "rgb") -> dict[str, Any]:
        """The answer for one image, as its kind of task gives it (classification: the
        class's name, index and softmax score; detection: ``detections``, each box
        ``[x0, y0, x1, y1]`` in this image's pixels, upright), and the milliseconds the
        model took (pre-processing not included). An array is taken as RGB unless
        ``channels="bgr"`` (OpenCV's ``imread``/``VideoCapture`` frames)."""
        picture = self.picture(image, channels)
        model_input = self.prepare(picture, channels)
        start = time.perf_counter()
        logits = self.logits(model_input)
        latency_ms = (time.perf_counter() - start) * 1e3
        return {**self.kind.answer(logits, self.classes, self.spec,
                                   place=self._placer(picture)),
                "latency_ms": round(latency_ms, 4)}

    def _placer(self, picture: Any) -> Any:
        """Boxes in fractions of the model's input -> in the pixels of ``picture`` (the
        pre-processing's inverse of its fit); a kind that locates nothing never calls it."""
        return lambda boxes: self._preprocess.boxes_in_image(
            boxes, picture.width, picture.height, self.height, self.width, self.fit)

    def check(self) -> dict[str, Any]:
        """The release's health check on its ``check/`` images (manifest ``check``):
        the kind of task's score (its metric, under the key ``accuracy``: a
        classifier's accuracy, a detector's mAP@0.5) through the whole path (decode,
        pre-process, infer) and p90 latency of the model. ``passed`` when the score's
        one-sided 95% upper bound (the kind's interval) reaches the floor and the p90 is
        within the limit; ``reasons`` say what missed. The check images are the
        prepared test images, at the model's size, so a detector's labels and
        predictions are both in fractions of its input."""
        check = self.manifest["check"]
        folder = os.path.join(self.folder, check["folder"])
        inputs = [self.prepare(os.path.join(folder, name)) for name in check["images"]]
        predicted = [self.kind.decode(self.logits(x), self.spec) for x in inputs]
        per_sample = self.kind.per_sample(predicted, check["labels"])
        accuracy = self.kind.metric(per_sample)
        upper = self.kind.interval(per_sample, CHECK_Z)[1]
        for x in inputs[:CHECK_WARMUP_RUNS]:
            self.logits(x)
        latencies = []
        while len(latencies) < max(CHECK_LATENCY_RUNS, len(inputs)):
            x = self._tensors.quantize_input(inputs[len(latencies) % len(inputs)],
                                             self.spec["input"])
            start = time.perf_counter_ns()
            self.runner.infer(x)
            latencies.append((time.perf_counter_ns() - start) / 1e6)
        p90 = float(self._latency.latency_summary(latencies)["latency_ms"]["p90"])
        reasons = []
        floor, limit = check.get("accuracy_floor"), check.get("max_latency_p90_ms")
        if floor is not None and upper < floor:
            reasons.append(f"{self.kind.metric_name} {accuracy:.3f} on {len(inputs)} check "
                           f"images (95% upper "
                           f"bound {upper:.3f}) is below the floor {floor:.3f}")
        if limit is not None and p90 > limit:
            reasons.append(f"p90 latency {p90:.3f} ms is above the limit {limit:g} ms")
        return {"passed": not reasons, "reasons": reasons, "images": len(inputs),
                "accuracy": accuracy, "accuracy_upper": upper, "accuracy_floor": floor,
                "latency_p90_ms": p90, "max_latency_p90_ms": limit,
                "latency_runs": len(latencies),
                # JSON as printed (a detector's predictions are arrays of boxes).
                "predicted": [np.asarray(value).tolist() for value in predicted],
                "checked_at": time.time()}


class _Deadlines:
    """Cuts the reading of a request that has not arrived whole within ``seconds`` of its
    connection waiting for it: an idle connection, a client that announces more than it
    sends, one that trickles its headers a byte at a time. Its socket is shut for
    reading, so the handler's blocked read returns at once and the thread is freed; a
    per-read socket timeout alone would let a trickle go on for ever."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._due: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._watch, name="request-deadlines", daemon=True).start()

    def start(self, connection: socket.socket) -> None:
        with self._lock:
            self._due[connection] = time.monotonic() + self.seconds

    def stop(self, connection: socket.socket) -> bool:
        """Stop timing ``connection``: False when its time had already run out."""
        with self._lock:
            return self._due.pop(connection, None) is not None

    def close(self) -> None:
        self._closed.set()

    def _watch(self) -> None:
        while not self._closed.wait(min(0.1, self.seconds / 4)):
            now = time.monotonic()
            with self._lock:
                late = [connection for connection, due in self._due.items() if due <= now]
                for connection in late:
                    del self._due[connection]
            for connection in late:
                try:
                    connection.shutdown(socket.SHUT_RD)
                except OSError:
                    pass  # closed meanwhile


class PredictServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once: one more is answered
    503 at once and closed, so slow clients can hold only so many threads and so much
    memory (each body at most ``max_bytes``)."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 timeout: float, max_connections: int) -> None:
        super().__init__(address, handler)
        self.deadlines = _Deadlines(timeout)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            body = (json.dumps({"error": "busy: too many connections, try again"}) + "\n").encode()
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\n"
                                b"Content-Type: application/json\r\nConnection: close\r\n"
                                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # socketserver.ThreadingMixIn's, with the slot freed before the connection closes:
        # a client that sends its next request once it sees the close must find it free
        # (freed after, a loaded machine answered that request 503 with no client left).
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self._slots.release()
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out or went away: nothing the application must read

    def server_close(self) -> None:
        super().server_close()
        self.deadlines.close()


def _handler(model: Model, max_bytes: int, timeout: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "edgeflow-predict"
        server: PredictServer

        def setup(self) -> None:
            self.timeout = timeout  # every read and write on the socket, the answer's too
            super().setup()

        def handle_one_request(self) -> None:
            self.server.deadlines.start(self.connection)
            try:
                super().handle_one_request()
            finally:
                self.server.deadlines.stop(self.connection)

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

        def _refuse(self, status: int, message: str) -> None:
            self.close_connection = True  # what is left of the body is not read
            self._answer(status, {"error": message})

        def _body(self) -> bytes | None:
            """The request's body, read only up to ``max_bytes``; None once an error is
            answered (the connection then closes)."""
            if "Transfer-Encoding" in self.headers:
                self._refuse(411, "send the image with a Content-Length header (a chunked "
                                  "body is not read)")
                return None
            announced = (self.headers.get("Content-Length") or "").strip()
            if not announced:
                self._refuse(411, "a Content-Length header is required")
                return None
            if not (announced.isascii() and announced.isdigit()):
                self._refuse(400, f"Content-Length must be a whole number of bytes, not "
                                  f"{announced[:40]!r}")
                return None
            length = int(announced)
            if length > max_bytes:
                self._refuse(413, f"the image is {length} bytes, more than the {max_bytes} "
                                  "allowed")
                return None
            chunks, received = [], 0
            try:
                while received < length:
                    chunk = self.rfile.read1(min(length - received, 1 << 16))
                    if not chunk:  # the client stopped, or its time ran out
                        break
                    chunks.append(chunk)
                    received += len(chunk)
            except (socket.timeout, TimeoutError):  # distinct classes before Python 3.10
                pass
            self.server.deadlines.stop(self.connection)  # inference is not the client's time
            data = b"".join(chunks)
            if len(data) < length:
                self._refuse(408, f"the request's {length} bytes did not arrive within "
                                  f"{timeout:g} s ({len(data)} did)")
                return None
            return data

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/predict":
                self._refuse(404, "POST an image to /predict")
                return
            data = self._body()
            if data is None:
                return
            try:
                self._answer(200, model.predict(data))
            except model.image_error as error:
                self._answer(400, {"error": str(error)})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # one line per request on stderr is the application's choice, not ours

    return Handler


def serve(model: Model, port: int, host: str = "127.0.0.1",
          max_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
          timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
          max_connections: int = DEFAULT_MAX_CONNECTIONS) -> HTTPServer:
    """An HTTP server for ``model`` (not started: ``serve_forever()``): a thread per
    connection, at most ``max_connections`` at once; a request must arrive whole within
    ``timeout`` seconds, its body of at most ``max_bytes``."""
    return PredictServer((host, port), _handler(model, max_bytes, timeout), timeout,
                         max_connections)


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run this release's model on images (its classes, or its boxes).")
    parser.add_argument("images", nargs="*", help="image files (PNG, JPEG...)")
    parser.add_argument("--model", default=RELEASE,
                        help="release folder (default: the one this predictor is in)")
    parser.add_argument("--serve", action="store_true", help="answer HTTP POSTs of images")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--max-bytes", type=_positive(int), default=DEFAULT_MAX_REQUEST_BYTES,
                        help="the largest image a request may send")
    parser.add_argument("--timeout", type=_positive(float),
                        default=DEFAULT_REQUEST_TIMEOUT_SECONDS,
                        help="seconds a request may take to arrive (an idle connection is cut)")
    parser.add_argument("--max-connections", type=_positive(int),
                        default=DEFAULT_MAX_CONNECTIONS,
                        help="connections served at once (more are answered 503)")
    parser.add_argument("--check", action="store_true", help="run the release's health check")
    parser.add_argument("--draw", metavar="OUT.png",
                        help="write the image with the boxes found drawn on it (a detector's "
                             "release, one image)")
    args = parser.parse_args(argv)
    if not (args.images or args.serve or args.check):
        parser.error("give image files, --serve or --check")
    if args.draw is not None and (len(args.images) != 1 or args.serve or args.check):
        print(f"predict.py: --draw draws on one image, not {len(args.images)}"
              + (" (nor with --serve or --check)" if args.serve or args.check else ""),
              file=sys.stderr)
        return 2
    try:
        model = Model(args.model)
    except ValueError as error:  # not the released files, or no release: one line
        print(f"predict.py: {error}", file=sys.stderr)
        return 2
    if args.draw is not None:
        if not model.kind.locates:
            print(f"predict.py: --draw: this release's model ({model.kind.name}) answers no "
                  "boxes to draw", file=sys.stderr)
            return 2
        return _draw(model, args.images[0], args.draw)
    if args.check:
        result = model.check()
        print(json.dumps(result))
        return 0 if result["passed"] else 3
    if args.serve:
        server = serve(model, args.port, args.host, args.max_bytes, args.timeout,
                       args.max_connections)
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
        except (model.image_error, OSError) as error:
            failed += 1
            print(json.dumps({"image": path, "error": str(error)}), flush=True)
    return 1 if failed else 0


def _draw(model: Model, path: str, out: str) -> int:
    """``--draw``: the answer for the image at ``path`` printed as without it, and the
    image with its boxes drawn written to ``out``."""
    try:
        picture = model.picture(path)
        answer = model.predict(picture)
    except (model.image_error, OSError) as error:
        print(json.dumps({"image": path, "error": str(error)}), flush=True)
        return 1
    _package_module("draw").draw_detections(picture, answer["detections"], out)
    print(json.dumps({"image": path, **answer, "drawn": out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
