"""Training on real data with the shipped params: the figures the README states.

For each dataset: class counts, train/val/test accuracy with 95% Wilson intervals, the
restored (best) epoch and the epochs run, and how long training took. Datasets: digits
(what `make run` trains) and the photo folders the tests build from photographs shipped
in installed packages (tests/image_folders.py): a small balanced two-class folder, an
imbalanced three-class one (trained with `class_weight: balanced`) and the two-class one
with labels dealt at random, which `train` must refuse. Optionally repeats digits over
other training seeds (`--digits-seeds 1 2 3`), since a CPU that rounds differently takes
another path through training, much as another seed does.

    .venv/bin/python benchmarks/training.py [--digits-seeds 1 2 3] [--skip-digits]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.core.contracts.prepared import read_meta  # noqa: E402
from tasks.core.errors import TrainingError  # noqa: E402
from tests.image_folders import build_photo_folder  # noqa: E402
from tests.tasks.test_train_real_data import default_params, prepare_and_train  # noqa: E402

FOLDERS: dict[str, tuple[dict[str, int], int, bool, dict[str, Any]]] = {
    # name: (images per class, seed, labels shuffled, train overrides)
    "photos-2class": ({"china": 100, "flower": 100}, 1, False, {}),
    "photos-imbalanced": ({"china": 150, "flower": 60, "hopper": 25}, 2, False,
                          {"class_weight": "balanced"}),
    "photos-shuffled": ({"china": 100, "flower": 100}, 3, True, {}),
}


def measure(name: str, root: Path, folder: Path | None, train: dict[str, Any]) -> str:
    """Prepare and train one dataset with the shipped params; one line of figures."""
    started = time.perf_counter()
    params = default_params(root, folder, **train)
    try:
        metrics = prepare_and_train(root, params)
    except TrainingError as refused:
        return f"{name:<20} refused: {refused}"
    seconds = time.perf_counter() - started
    counts = "/".join(str(count) for count in read_meta(root / "data/prepared").per_class.values())
    cells = [f"{split} {_interval(metrics, split)}" for split in ("train", "val", "test")]
    return (f"{name:<20} classes {counts:<12} {'  '.join(cells)}  best epoch "
            f"{metrics['best_epoch']} of {metrics['epochs_run']}  {seconds:.0f} s")


def _interval(metrics: dict[str, Any], split: str) -> str:
    return (f"{metrics[f'{split}_accuracy']:.4f} [{metrics[f'{split}_accuracy_low']:.3f}, "
            f"{metrics[f'{split}_accuracy_high']:.3f}] (n={metrics[f'{split}_samples']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits-seeds", type=int, nargs="*", default=[])
    parser.add_argument("--skip-digits", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeflow-training-") as scratch:
        work = Path(scratch)
        for seed in ([] if args.skip_digits else [None, *args.digits_seeds]):
            label = "digits" if seed is None else f"digits seed {seed}"
            print(measure(label, work / label.replace(" ", "-"), None,
                          {} if seed is None else {"seed": seed}), flush=True)
        for name, (counts, seed, shuffled, train) in FOLDERS.items():
            folder = build_photo_folder(work / name / "images", counts, seed=seed,
                                        shuffle_labels=shuffled)
            print(measure(name, work / name / "project", folder, train), flush=True)


if __name__ == "__main__":
    main()
