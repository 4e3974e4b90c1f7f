"""An MLflow pyfunc that serves one variant as the application's model: raw images of
any size in (what a release's ``predict.py`` takes), named outputs out (``class``,
``index``, ``score``, ``scores``), through the same pre-processing (``preprocess``) and
the same loader and quantisation of input and output (``runtimes``, ``tensors``) a
device uses: the device code's package, shipped in the model.

Input, through the signature (``mlflow.pyfunc.load_model(...).predict``): a batch of
uint8 images (N, H, W, C) of any size with 1, 3 or 4 channels, or images of different
sizes as a 1-D object array (MLflow's ragged tensors). :func:`images_of` itself (the
class called directly) also takes one image (H, W) or (H, W, C), float pixels in [0, 1]
and encoded images (PNG, JPEG bytes).
Output: a pandas DataFrame, one row per image. A classifier's: ``class`` (its name),
``index``, ``score`` (the softmax probability of that class) and ``scores`` (every
class's, in the order of the classes). A detector's (a variant whose kind of task
locates, ``"task": "detection"`` in its spec): ``detections``, the list the release's
predictor answers for that image, ``[{"class", "index", "score", "box"}]`` best first,
``box`` ``[x0, y0, x1, y1]`` in the pixels of the image given (upright: after its EXIF
rotation), through the kind's own decoding (the spec's ``"detection"`` entry: grid,
thresholds, NMS) and the pre-processing's inverse of its fit (``boxes_in_image``): the
same code the predictor runs, so the two answer alike.

Saved as code (MLflow's models-from-code: this file is copied into the model and run
when it is loaded; no pickle), with the device code's package (``edgeflow_device/``) as
the model's code (MLflow puts it on ``sys.path`` when it loads the model), the artifact
and ``serving.json`` as the model's artifacts: loading it needs MLflow, NumPy, Pillow,
pandas and the variant's runtime, not edgeflow.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import mlflow.models
import mlflow.pyfunc

OUTPUTS = ("class", "index", "score", "scores")
# A locating kind's (a detector's) one column: each image's list of boxes.
BOX_OUTPUTS = ("detections",)


def images_of(model_input: Any) -> list[Any]:
    """The images in ``model_input`` (see the module's docstring for what it may be),
    each an array or encoded bytes."""
    import numpy as np
    import pandas as pd

    if isinstance(model_input, dict) and len(model_input) == 1:  # {"images": ...}
        (model_input,) = model_input.values()
    if isinstance(model_input, pd.DataFrame):  # a served request's one column of images
        model_input = list(model_input.iloc[:, 0])
    if isinstance(model_input, (bytes, bytearray)):
        return [bytes(model_input)]
    if isinstance(model_input, np.ndarray) and model_input.dtype != object:
        if model_input.ndim == 4:
            return list(model_input)
        return [model_input]  # one image: (H, W) or (H, W, C)
    return list(model_input)


class HarnessModel(mlflow.pyfunc.PythonModel):
    """``context.artifacts``: ``serving`` (``{"package", "runtime", "artifact", "spec",
    "options", "input": {"height", "width", "color", "fit"}, "classes"}``, the artifact by
    its artifact key; ``fit`` absent, in models logged before it was recorded, is
    ``squash``) and the variant's files. ``package``: the device code's package, in the
    model's code (on ``sys.path`` once MLflow loads the model)."""

    def load_context(self, context: Any) -> None:
        with open(context.artifacts["serving"], encoding="utf-8") as file:
            serving = json.load(file)
        package = serving["package"]
        runtimes = importlib.import_module(f"{package}.runtimes")
        self._tensors = importlib.import_module(f"{package}.tensors")
        self._preprocess = importlib.import_module(f"{package}.preprocess")
        self._spec = serving["spec"]
        # The variant's kind of task, from the shipped package as the predictor finds it.
        self._kind = importlib.import_module(f"{package}.kinds").of_spec(self._spec)
        self._input, self._classes = serving["input"], list(serving["classes"])
        self._runner = runtimes.load_runner(serving["runtime"],
                                            context.artifacts[serving["artifact"]],
                                            1, serving["options"])

    def _picture(self, image: Any) -> Any:
        """One image as an upright PIL image, as ``predict.py`` reads it."""
        pre = self._preprocess
        picture = pre.decode_image(bytes(image)) if isinstance(image, (bytes, bytearray)) \
            else pre.image_from_array(image)
        return pre.upright(picture)

    def _prepared(self, image: Any) -> Any:
        """One image as the model's input, as ``predict.py`` prepares it."""
        # The prepared data's fit: a letterbox project's images are letterboxed here too.
        return self._preprocess.to_model_input(
            self._picture(image), self._input["height"], self._input["width"],
            self._input["color"], self._input.get("fit", "squash"))

    # No type hints: MLflow would read them as a schema (it takes the signature instead).
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        images = images_of(model_input)
        return (self._boxes if self._kind.locates else self._classes_of)(images)

    def _boxes(self, images: list[Any]) -> Any:
        """A detector's answer per image: the kind's decoding and answer, each box placed
        in the image's pixels through the pre-processing's inverse of its fit."""
        import numpy as np
        import pandas as pd

        pre, size = self._preprocess, self._input
        height, width, fit = size["height"], size["width"], size.get("fit", "squash")
        pictures = [self._picture(image) for image in images]
        answers = []
        for picture in pictures:
            model_input = pre.to_model_input(picture, height, width, size["color"], fit)
            output = self._tensors.predict(self._runner, model_input[np.newaxis], self._spec)[0]
            answers.append(self._kind.answer(
                output, self._classes, self._spec,
                place=lambda boxes, picture=picture: pre.boxes_in_image(
                    boxes, picture.width, picture.height, height, width, fit))["detections"])
        return pd.DataFrame({"detections": answers}, columns=list(BOX_OUTPUTS))

    def _classes_of(self, images: list[Any]) -> Any:
        """A classifier's answer per image: class, index, score and every class's score."""
        import numpy as np
        import pandas as pd

        logits = self._tensors.predict(self._runner,
                                       np.stack([self._prepared(image) for image in images]),
                                       self._spec) if images else np.zeros((0, len(self._classes)))
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
        best = scores.argmax(axis=1)
        return pd.DataFrame({"class": [self._classes[index] for index in best],
                             "index": best.astype(np.int64),
                             "score": scores[np.arange(len(best)), best].astype(np.float64),
                             "scores": [row.astype(np.float64).tolist() for row in scores]},
                            columns=list(OUTPUTS))


if __name__ != "tasks.track.pyfunc_model":  # run by MLflow as a model's code, not imported
    mlflow.models.set_model(HarnessModel())
