"""An MLflow pyfunc that serves one variant with its own runtime, through the same
loader and pre/post-processing the benchmark harness uses on a device: normalised float
images (N, H, W, C) in, float logits (N, classes) out, whatever the artifact's own input
type (an int8 TFLite model is quantised by the spec it was converted with).

Saved as code (MLflow's models-from-code: this file is copied into the model and run
when it is loaded; no pickle), with the harness file, the artifact and ``serving.json``
as the model's artifacts: loading it needs MLflow, NumPy and the variant's runtime, not
edgeflow.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import mlflow.models
import mlflow.pyfunc


class HarnessModel(mlflow.pyfunc.PythonModel):
    """``context.artifacts``: ``harness`` (tasks/device/harness.py), ``serving``
    (``{"runtime", "artifact", "spec", "options"}``, the artifact by its artifact key)
    and the variant's files."""

    def load_context(self, context: Any) -> None:
        module_spec = importlib.util.spec_from_file_location("edgeflow_harness",
                                                             context.artifacts["harness"])
        assert module_spec is not None and module_spec.loader is not None
        harness = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(harness)
        with open(context.artifacts["serving"], encoding="utf-8") as file:
            serving = json.load(file)
        self._harness, self._spec = harness, serving["spec"]
        self._runner = harness.load_runner(serving["runtime"],
                                           context.artifacts[serving["artifact"]],
                                           1, serving["options"])

    # No type hints: MLflow would read them as a schema (it takes the signature instead).
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import numpy as np

        images = np.asarray(model_input, dtype=np.float32)
        return self._harness.predict(self._runner, images, self._spec)


if __name__ != "tasks.track.pyfunc_model":  # run by MLflow as a model's code, not imported
    mlflow.models.set_model(HarnessModel())
