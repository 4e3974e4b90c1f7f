"""Makes yolo_scenes96.onnx: an Ultralytics YOLOv8 (a narrow one, so the committed file
stays small) trained on edgeflow's own digit scenes and exported to ONNX as an
Ultralytics user would (``model.export(format="onnx")``: one output (1, 4 + C, N), no
NMS). Not run by the tests (edgeflow depends on neither Ultralytics nor PyTorch); kept so
the fixture can be made again, in a venv of its own::

    python3.11 -m venv /tmp/yolovenv
    /tmp/yolovenv/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics onnx onnxruntime onnxslim
    # the scenes, prepared by edgeflow (experiments/yolo's data section), as a YOLO folder:
    python tests/data/make_yolo.py dataset --prepared experiments/yolo/data/prepared --out /tmp/yolo_scenes
    /tmp/yolovenv/bin/python tests/data/make_yolo.py train --dataset /tmp/yolo_scenes \
        --out tests/data/yolo_scenes96.onnx --epochs 80 --lr0 0.004

``dataset`` needs only NumPy and Pillow (either venv): each split of the prepared folder
(float images in [0, 1] that are exact 8-bit values, boxes as normalised corners) is
written as lossless PNGs and YOLO labels (``class cx cy w h``, normalised), with a
``data.yaml``, so Ultralytics and edgeflow read the very same pixels and boxes.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

# A YOLOv8 a quarter of yolov8n's width (yolov8.yaml's layers at scale "t": depth 0.33,
# width 0.0625): 355 k parameters, a 1.5 MB ONNX file. The committed fixture:
# ``train --epochs 80 --lr0 0.004`` (yolo val mAP50 0.69 on the 300 test scenes).
SCALE = {"t": [0.33, 0.0625, 1024]}


def write_dataset(prepared: Path, out: Path) -> Path:
    """The prepared splits (train, val, test) as a YOLO folder under ``out``; its data.yaml."""
    import json

    from PIL import Image

    classes = json.loads((prepared / "meta.json").read_text())["classes"]
    if out.exists():
        shutil.rmtree(out)
    for split in ("train", "val", "test"):
        with np.load(prepared / f"{split}.npz") as arrays:
            images, labels = arrays["x"], arrays["y"]
        (out / "images" / split).mkdir(parents=True)
        (out / "labels" / split).mkdir(parents=True)
        for index, (image, label) in enumerate(zip(images, labels)):
            name = f"{split}{index:05d}"
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(
                out / "images" / split / f"{name}.png")
            rows = [row for row in label if row[0] >= 0]  # class -1: the split's padding
            (out / "labels" / split / f"{name}.txt").write_text("".join(
                f"{int(c)} {(x0 + x1) / 2:.8f} {(y0 + y1) / 2:.8f} {x1 - x0:.8f} {y1 - y0:.8f}\n"
                for c, x0, y0, x1, y1 in rows))
    data = out / "data.yaml"
    data.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/val\n"
                    f"test: images/test\nnames:\n"
                    + "".join(f"  {index}: '{name}'\n" for index, name in enumerate(classes)))
    return data


def train(dataset: Path, out: Path, epochs: int, size: int, lr0: float | None) -> None:
    import yaml
    from ultralytics import YOLO
    import ultralytics

    config = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/models/v8/yolov8.yaml")
                            .read_text())
    config["scales"] = SCALE
    config["nc"] = len(yaml.safe_load((dataset / "data.yaml").read_text())["names"])
    work = out.parent / f"yolo_runs_{out.stem}"
    model_yaml = work / "yolov8t.yaml"
    work.mkdir(parents=True, exist_ok=True)
    model_yaml.write_text(yaml.safe_dump(config))
    model = YOLO(str(model_yaml))
    # Ultralytics' "auto" optimizer picks AdamW at lr 0.0007 for a run this short: a
    # network this narrow, from scratch, learns far faster at a higher rate.
    tuning = {} if lr0 is None else {"optimizer": "AdamW", "lr0": lr0}
    model.train(data=str(dataset / "data.yaml"), imgsz=size, epochs=epochs, batch=32, **tuning,
                device="cpu", workers=0, seed=0, deterministic=True, plots=False,
                fliplr=0.0,  # a mirrored digit is no digit
                project=str(work), name="train", exist_ok=True, amp=False, verbose=False)
    best = YOLO(str(work / "train" / "weights" / "best.pt"))
    exported = best.export(format="onnx", imgsz=size, opset=17, dynamic=False, simplify=True,
                           nms=False, device="cpu")
    shutil.copy(exported, out)
    print("wrote", out, out.stat().st_size, "bytes")


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    dataset = commands.add_parser("dataset")
    dataset.add_argument("--prepared", type=Path, required=True)
    dataset.add_argument("--out", type=Path, required=True)
    trainer = commands.add_parser("train")
    trainer.add_argument("--dataset", type=Path, required=True)
    trainer.add_argument("--out", type=Path, required=True)
    trainer.add_argument("--epochs", type=int, default=80)
    trainer.add_argument("--size", type=int, default=96)
    trainer.add_argument("--lr0", type=float, default=0.004)
    arguments = parser.parse_args()
    if arguments.command == "dataset":
        print(write_dataset(arguments.prepared, arguments.out))
    else:
        train(arguments.dataset, arguments.out, arguments.epochs, arguments.size, arguments.lr0)


if __name__ == "__main__":
    main()
