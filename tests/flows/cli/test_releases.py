"""``edgeflow release DEVICE`` without ``--variant`` releases the device's recommendation;
without one it says why in one line (issue 28: an emulated board select left out names
the opt-in)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from flows.cli.releases import _recommended
from tasks.core.errors import StepError
from tasks.core.layout import Layout

WHY = "emulated (qemu-user): not recommended; set select.include_emulated to recommend on it"


def test_a_release_by_hand_without_a_recommendation_says_why(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.reports.mkdir(parents=True)
    layout.summary.write_text(json.dumps({
        "reference_accuracy": 0.9, "rank_by": "latency_p50_ms", "requirements": {},
        "counts": {"pass": 2, "fail": 1, "error": 0, "skipped": 0},
        "recommendations": {"pi": "onnx-fp32", "slow": None, "pi5-emu": None},
        "excluded": {"pi5-emu": WHY}, "results": []}))
    ctx = SimpleNamespace(layout=layout)
    assert _recommended(ctx, "pi") == "onnx-fp32"
    with pytest.raises(StepError) as emulated:
        _recommended(ctx, "pi5-emu")
    assert str(emulated.value) == (f"nothing recommended on pi5-emu: {WHY}, or name a variant "
                                   "with --variant")
    with pytest.raises(StepError) as slow:
        _recommended(ctx, "slow")
    assert str(slow.value) == "no variant passed the requirements on slow: name one with --variant"
