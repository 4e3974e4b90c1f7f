"""Kinds of task: what a model's outputs mean, and how it is scored. Ships to boards.

The harness, the predictor (``from . import kinds`` in the device package) and the
orchestrator (:func:`tasks.core.device_code.task_kinds`) ask this registry, never assume
classification. A kind is one module that defines ``KIND``, an object with the members
of :class:`TaskKind`; it imports the standard library and NumPy only (it runs on
boards), nothing of edgeflow and not this registry. The registry itself is standard
library only: the configuration loads it without NumPy.

Where kinds come from:
- the built-in ones are the modules of this sub-package (``kinds/classification.py``),
  imported by name when first asked for;
- another is registered from its file (:func:`register_file`), by a process that
  orchestrates (a test's toy kind). Its file is what travels: whatever ships the device
  package to a board (the benchmark's run folder, a release) ships the kind's file
  (:func:`registered`) as ``kinds/<name>.py``, where the board's registry imports it by
  name like a built-in one.

A variant's spec names its kind as ``"task"``; a spec without one is classification
(every spec written before kinds existed, every release already on a board).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

if TYPE_CHECKING:  # annotations only: the registry loads without NumPy
    import numpy as np

KINDS_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT = "classification"
# The normal quantile for a two-sided 95% interval.
Z_95 = 1.959963984540054


class TaskKind(Protocol):
    """What a kind of task decides. ``output`` is one sample's float output (the runtime's
    raw output, de-quantised); ``prediction`` what :meth:`decode` makes of it; a label
    is one entry of the test split's ``y``."""

    name: str
    # What decoding is called in messages ("argmax agreement 0.97 < 0.99").
    decoding: str
    # What :meth:`metric` is called in messages ("accuracy", "mAP@0.5").
    metric_name: str
    # What :meth:`interval` is, in the report's words ("Wilson interval").
    interval_name: str
    # Whether an answer places things in the image: its answer is then ``{"detections":
    # [{"class", "index", "score", "box"}]}``, boxes through :meth:`answer`'s ``place``,
    # and the predictor can draw them (``--draw``).
    locates: bool
    # Whether :meth:`metric` is the share of samples right, so a device's figure must be a
    # whole number of them over its samples (an accuracy; not a mAP).
    share_of_samples: bool

    def check_output(self, x: np.ndarray, y: Any, spec: Mapping[str, Any]) -> None:
        """Raise ValueError unless ``y``, the model's answer to the one sample ``x``,
        has the shape this kind reads (what is timed must be one sample's answer)."""

    def decode(self, output: np.ndarray, spec: Mapping[str, Any] | None = None) -> Any:
        """The prediction in one sample's output (a class index, boxes...): the
        application's post-processing, timed as such end to end. ``spec`` is the
        variant's: what a kind needs beyond the output (a detector's grid and
        thresholds, for an output that arrives flattened); a kind may ignore it."""

    def per_sample(self, predictions: Sequence[Any], labels: Sequence[Any]) -> np.ndarray:
        """Each sample's result against its label (1.0 right, 0.0 wrong for a class)."""

    def metric(self, per_sample: np.ndarray) -> float:
        """The headline score of these per-sample results (higher is better)."""

    def interval(self, per_sample: np.ndarray, z: float = Z_95) -> tuple[float, float]:
        """The interval of :meth:`metric` at the normal quantile ``z`` (95% two-sided by
        default; its upper end at z=1.645 is a one-sided 95% upper bound)."""

    def scores(self, per_sample: np.ndarray) -> dict[str, Any]:
        """The kind's measures beyond :meth:`metric`, for the results and reports, as
        JSON (detection: mAP@0.5:0.95 and per-class AP; classification: none)."""

    def agreement(self, predictions: Sequence[Any], reference: Sequence[Any]) -> float:
        """The share of samples whose prediction matches the reference model's."""

    def json_label(self, label: Any) -> Any:
        """One label of the test split as JSON (a release's health check records its
        images' labels so); :meth:`per_sample` reads it back as a label."""

    def answer(self, output: np.ndarray, classes: Sequence[str],
               spec: Mapping[str, Any] | None = None,
               place: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, Any]:
        """The predictor's JSON answer for one sample's output (``spec`` as for
        :meth:`decode`). ``place`` maps boxes ``(k, 4)`` in fractions of the model's
        input to the caller's image (the predictor's, from the image's size and the
        fit); a kind that does not locate ignores it, one that does answers its boxes
        through it (without it: in fractions of the model's input)."""


_KINDS: dict[str, TaskKind] = {}
_SOURCES: dict[str, str] = {}


def _module_from(path: str) -> Any:
    """The module in ``path`` (a kind registered from a file outside this package),
    loaded once per file under a name of its path (two folders' kinds stay apart)."""
    digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:12]
    name = f"edgeflow_task_kind_{os.path.splitext(os.path.basename(path))[0]}_{digest}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"{path} is not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def _add(module: Any, path: str) -> TaskKind:
    kind = getattr(module, "KIND", None)
    name = getattr(kind, "name", None)
    if not isinstance(name, str) or not _is_name(name):
        raise ValueError(f"{path} defines no KIND with a name (an identifier)")
    known = _SOURCES.get(name)
    if known is None and path != _built_in_path(name) and os.path.isfile(_built_in_path(name)):
        known = _built_in_path(name)  # a built-in kind's name, not asked for yet
    if known is not None and known != path:
        raise ValueError(f"task kind {name!r} is already registered from {known}")
    _KINDS[name], _SOURCES[name] = kind, path
    return kind


def register_file(path: str) -> TaskKind:
    """Register the kind defined (``KIND``) in the module at ``path``; returns it. The
    same name from another file is refused (two kinds would answer to one name)."""
    path = os.path.abspath(path)
    return _add(_module_from(path), path)


def forget(name: str) -> None:
    """Unregister a kind registered from a file (a test's toy kind, once it is done)."""
    _KINDS.pop(name, None)
    _SOURCES.pop(name, None)


def names() -> list[str]:
    """Every kind this registry can give: the registered ones and those of its package."""
    found = set(_KINDS)
    found.update(entry[:-3] for entry in os.listdir(KINDS_DIR)
                 if entry.endswith(".py") and _is_name(entry[:-3]))
    return sorted(found)


def _is_name(name: str) -> bool:
    return name.isidentifier() and not name.startswith("_")  # not this registry


def _built_in_path(name: str) -> str:
    return os.path.join(KINDS_DIR, f"{name}.py")


def get(name: str) -> TaskKind:
    """The kind named ``name``; ValueError listing the known kinds for another."""
    if name not in _KINDS:
        if not (_is_name(name) and os.path.isfile(_built_in_path(name))):
            raise ValueError(f"unknown task kind {name!r}: one of {', '.join(names())}")
        # A module of this package: kinds.<name> here, edgeflow_device.kinds.<name> on
        # a board (where a registered kind's file was shipped under its name).
        _add(importlib.import_module(f"{__name__}.{name}"), _built_in_path(name))
    return _KINDS[name]


def source(name: str) -> str:
    """The file that defines the kind ``name``."""
    get(name)
    return _SOURCES[name]


def registered() -> dict[str, str]:
    """The kinds registered from files outside this package, name -> file: what ships
    into ``kinds/<name>.py`` beside this registry, so a board finds them by name."""
    return {name: path for name, path in sorted(_SOURCES.items())
            if os.path.dirname(path) != KINDS_DIR}


def of_spec(spec: Mapping[str, Any]) -> TaskKind:
    """The kind a variant's spec names (``"task"``; none: classification)."""
    return get(spec.get("task") or DEFAULT)
