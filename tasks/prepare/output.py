"""Writing ``data/prepared/``: every split's images and labels and ``meta.json``, into a
staging folder that replaces ``out_dir`` only once all of it is written. Shared by the
preparation of each kind of labels (one class per image, boxes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.config import DataParams
from tasks.core.contracts.prepared import (DEFAULT_TASK, SPLITS, PreparedMeta, SkippedFile,
                                           write_meta, write_split)
from tasks.core.files import atomic_output_dir, sha256_file


@dataclass(frozen=True)
class PreparedSplits:
    """What a preparation made: each split's images and labels, and what ``meta.json``
    says of them beside the params (counts per class: images or objects by kind)."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    source: str
    classes: list[str]
    normalisation: str
    per_class: dict[str, int]
    per_split_class: dict[str, dict[str, int]]
    warnings: list[str]
    skipped: list[SkippedFile] | list[dict[str, str]]


def write_prepared(params: DataParams, prepared: PreparedSplits, out_dir: Path) -> Path:
    """Write ``prepared`` into ``out_dir`` (replaced when all is written); returns it.
    The task is named in meta.json only where it is not classification, as before
    kinds existed."""
    with atomic_output_dir(out_dir) as staging:
        hashes = {name: sha256_file(write_split(staging, name, prepared.x[name],
                                                prepared.y[name]))
                  for name in SPLITS}
        write_meta(staging, PreparedMeta(
            source=prepared.source,
            classes=prepared.classes,
            input_shape=list(prepared.x[SPLITS[0]].shape[1:]),
            normalisation=prepared.normalisation,
            color=params.color,
            fit=params.fit,
            **({} if params.task == DEFAULT_TASK else {"task": params.task}),
            seed=params.seed,
            counts={name: int(len(prepared.x[name])) for name in SPLITS},
            per_class=prepared.per_class,
            per_split_class=prepared.per_split_class,
            warnings=prepared.warnings,
            skipped_count=len(prepared.skipped),
            skipped=prepared.skipped,
            sha256=hashes,
        ))
    return out_dir
