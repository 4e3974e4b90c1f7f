"""The prepared data as MLflow dataset inputs: one per split, named after the data
source, with the split file's sha256 as its digest (the file as written, every byte;
MLflow's own digest of an array samples it) and the split as its context."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from tasks.core.contracts.prepared import load_split, read_meta

CONTEXT_TAG = "mlflow.data.context"
DIGEST_LENGTH = 16  # as the data_hash tag: enough to tell versions apart, short in the UI


def split_dataset(prepared: Path, split: str) -> Any:
    """The ``split`` of ``data/prepared`` as an MLflow dataset (features, targets,
    source path, digest)."""
    import mlflow.data

    meta = read_meta(prepared)
    x, y = load_split(prepared, split)
    with warnings.catch_warnings():
        # A local path matches two of MLflow's source types; it says so and picks one.
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways")
        return mlflow.data.from_numpy(x, targets=y,
                                      source=str((prepared / f"{split}.npz").resolve()),
                                      name=f"{meta.source}-{split}",
                                      digest=meta.sha256[split][:DIGEST_LENGTH])


def dataset_inputs(prepared: Path, splits: tuple[str, ...]) -> list[Any]:
    """``DatasetInput`` entities for ``client.log_inputs``, one per split."""
    from mlflow.entities import DatasetInput, InputTag

    return [DatasetInput(split_dataset(prepared, split)._to_mlflow_entity(),
                         tags=[InputTag(CONTEXT_TAG, split)]) for split in splits]
