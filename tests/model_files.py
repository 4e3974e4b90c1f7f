"""Models a user brings, built here (no download): the tiny project's trained Keras
model as a ``.keras`` file and a SavedModel, its ONNX export (NHWC), and an NCHW ONNX
model (the export behind a Transpose, as a PyTorch export takes its input), plus broken
files for the one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path


def nchw_onnx(nhwc: Path, target: Path) -> Path:
    """``nhwc`` behind a Transpose: an input of (batch, channels, height, width)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(nhwc))
    graph = model.graph
    initialisers = {init.name for init in graph.initializer}
    original = next(value for value in graph.input if value.name not in initialisers)
    dims = [dim.dim_value or None for dim in original.type.tensor_type.shape.dim]
    batch, height, width, channels = dims
    inner = original.name + "_nhwc"
    for node in graph.node:
        node.input[:] = [inner if name == original.name else name for name in node.input]
    graph.node.insert(0, helper.make_node("Transpose", [original.name], [inner],
                                          perm=[0, 2, 3, 1], name="to_nhwc"))
    original.type.tensor_type.shape.ClearField("dim")
    for size in (batch, channels, height, width):
        dim = original.type.tensor_type.shape.dim.add()
        if size is None:
            dim.dim_param = "batch"
        else:
            dim.dim_value = size
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return target


def dynamic_batch(onnx_path: Path, target: Path) -> Path:
    """``onnx_path`` with its batch dimension left open ("?"), as exports have it."""
    import onnx

    model = onnx.load(str(onnx_path))
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    onnx.save(model, str(target))
    return target


def bring(base_model: Path, onnx_fp32: Path, folder: Path) -> dict[str, Path]:
    """Every source kind in ``folder``: ``keras``, ``saved_model``, ``onnx`` (NHWC,
    dynamic batch) and ``nchw`` (ONNX, NCHW, dynamic batch)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(base_model / "model.keras", folder / "model.keras")
    shutil.copytree(base_model / "saved_model", folder / "saved_model", dirs_exist_ok=True)
    nhwc = dynamic_batch(onnx_fp32, folder / "model.onnx")
    return {"keras": folder / "model.keras", "saved_model": folder / "saved_model",
            "onnx": nhwc, "nchw": nchw_onnx(nhwc, folder / "model_nchw.onnx")}


def mobilenet_v3(target: Path, classes: int = 10, image_size: int = 32, steps: int = 2,
                 seed: int = 0) -> Path:
    """A keras.applications MobileNetV3Small (alpha 0.75, RGB, ``weights=None``: built
    offline) trained for a few steps on random images, saved as ``target`` (.keras):
    a real network with a classifier head (1x1 conv logits, flatten, softmax) after
    1024-wide features, and batch norms whose moving statistics lag its weights."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV3Small(
        input_shape=(image_size, image_size, 3), alpha=0.75, weights=None, classes=classes,
        include_preprocessing=False)
    rng = np.random.default_rng(seed)
    images = rng.random((16 * steps, image_size, image_size, 3), np.float32)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images, rng.integers(0, classes, len(images)), batch_size=16, epochs=1, verbose=0)
    model.save(target)
    return target


def linear_onnx(target: Path, opset: int, op: str = "Gemm", domain: str = "",
                size: int = 16, classes: int = 10, seed: int = 0) -> Path:
    """A linear classifier of ``size``x``size`` grey images (Reshape, then ``op`` of
    ``domain``: Gemm of the standard one by default) stamped with ``opset``: the old or
    future opsets and custom-domain ops that real exports carry."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    initialisers = [numpy_helper.from_array(np.array([1, size * size], np.int64), "shape"),
                    numpy_helper.from_array(rng.normal(size=(size * size, classes)).astype(
                        np.float32), "weights"),
                    numpy_helper.from_array(np.zeros(classes, np.float32), "bias")]
    nodes = [helper.make_node("Reshape", ["image", "shape"], ["flat"]),
             helper.make_node(op, ["flat", "weights", "bias"], ["scores"], domain=domain)]
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                        [1, size, size, 1])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, classes])],
        initialisers)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 7  # what ONNX Runtime reads for every opset here
    onnx.save(model, str(target))
    return target
