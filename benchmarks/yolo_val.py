"""edgeflow's mAP@0.5 of an Ultralytics YOLO ONNX export against ``yolo val``'s mAP50, on
the same images: the test split of an edgeflow-prepared detection folder.

The split is written as a YOLO folder (lossless PNGs of its exact 8-bit pixels, labels
from its boxes: ``tests/data/make_yolo.py``'s writer), ``yolo val`` runs on it in a venv
with Ultralytics (``--yolo-python``; edgeflow does not depend on it) with its defaults
for mAP (``conf=0.001 iou=0.7 max_det=300 batch=1``), and edgeflow decodes the same
model's ONNX Runtime outputs (the device code's runner) with its detection kind: the
"yolo" layout, those thresholds, a box per class above the score (``multi_label``, as
yolo val decodes), NMS per class, Ultralytics' AP integration
(``AP_METHODS["ultralytics"]``). Prints both, their difference and the per-class APs::

    .venv/bin/python benchmarks/yolo_val.py --model tests/data/yolo_scenes96.onnx \\
        --prepared experiments/yolo/data/prepared --yolo-python /tmp/yolovenv/bin/python

Exit 1 when they differ by more than ``--tolerance`` (0.01).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.core import device_code  # noqa: E402
from tasks.core.contracts.prepared import load_split, read_meta  # noqa: E402

# yolo val's defaults for mAP, and edgeflow's decoding set to them.
CONF, IOU, MAX_DET = 0.001, 0.7, 300

YOLO_VAL = """
import json, sys
from ultralytics import YOLO
model, data, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
metrics = YOLO(model, task="detect").val(data=data, imgsz=size, conf={conf}, iou={iou},
                                          max_det={max_det}, batch=1, split="test",
                                          device="cpu", plots=False, verbose=False)
print("RESULT " + json.dumps({{"map50": float(metrics.box.map50),
                               "map50_95": float(metrics.box.map),
                               "ap50": [float(v) for v in metrics.box.ap50],
                               "classes": [int(c) for c in metrics.box.ap_class_index]}}))
""".format(conf=CONF, iou=IOU, max_det=MAX_DET)


def _make_yolo() -> object:
    spec = importlib.util.spec_from_file_location("make_yolo", ROOT / "tests/data/make_yolo.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def yolo_val(model: Path, prepared: Path, python: str, size: int, folder: Path) -> dict:
    """``yolo val``'s figures on the prepared test split (written under ``folder``)."""
    data = _make_yolo().write_dataset(prepared, folder)  # type: ignore[attr-defined]
    found = subprocess.run([python, "-c", YOLO_VAL, str(model), str(data), str(size)],
                           capture_output=True, text=True, cwd=folder,
                           env={**os.environ, "YOLO_OFFLINE": "1"})
    lines = [line for line in found.stdout.splitlines() if line.startswith("RESULT ")]
    if found.returncode or not lines:
        raise SystemExit(f"yolo val failed ({found.returncode}):\n{found.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def edgeflow_map(model: Path, prepared: Path) -> object:
    """edgeflow's scores (``DetectionScores``) of ``model`` on the prepared test split, as
    the detection kind decodes and scores a YOLO output, at yolo val's thresholds."""
    images, labels = load_split(prepared, "test")
    classes = len(read_meta(prepared).classes)
    runtimes, tensors = device_code.load("runtimes"), device_code.load("tensors")
    size = images.shape[1:3]
    spec = {"input": {"dtype": "float32", "shape": [1, 3, *size], "layout": "NCHW",
                      "quantization": None, "normalize": None},
            "task": "detection",
            "detection": {"format": "yolo", "classes": classes, "score_threshold": CONF,
                          "iou_threshold": IOU, "max_detections": MAX_DET,
                          "multi_label": True}}
    runner = runtimes.load_runner("onnxruntime", str(model), 1,
                                  {"execution_precision": "f32",
                                   "input_shape": spec["input"]["shape"]})
    outputs = tensors.predict(runner, images, spec)
    kinds = device_code.task_kinds()
    kind = kinds.get("detection")
    module = sys.modules[type(kind).__module__]
    results = kind.per_sample([kind.decode(row, spec) for row in outputs], labels)
    return module.scores(results, method="ultralytics")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--yolo-python", default="/tmp/yolovenv/bin/python")
    parser.add_argument("--tolerance", type=float, default=0.01)
    arguments = parser.parse_args()
    size = int(read_meta(arguments.prepared).input_shape[0])
    with tempfile.TemporaryDirectory() as scratch:
        theirs = yolo_val(arguments.model.resolve(), arguments.prepared.resolve(),
                          arguments.yolo_python, size, Path(scratch) / "scenes")
    ours = edgeflow_map(arguments.model, arguments.prepared)
    difference = ours.map50 - theirs["map50"]
    print(f"test images: {len(load_split(arguments.prepared, 'test')[0])} at {size}x{size}; "
          f"conf {CONF}, iou {IOU}, max_det {MAX_DET}")
    print(f"yolo val  mAP50 {theirs['map50']:.4f}  mAP50-95 {theirs['map50_95']:.4f}")
    print(f"edgeflow  mAP50 {ours.map50:.4f}  mAP50-95 {ours.map50_95:.4f}  (AP: ultralytics)")
    print(f"difference {difference:+.4f} (tolerance {arguments.tolerance})")
    print("per class AP50 (yolo val / edgeflow): " + ", ".join(
        f"{label}: {value:.3f}/{ours.ap50.get(label, 0.0):.3f}"
        for label, value in zip(theirs["classes"], theirs["ap50"])))
    sys.exit(0 if abs(difference) <= arguments.tolerance else 1)


if __name__ == "__main__":
    main()
