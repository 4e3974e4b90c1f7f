"""Makes torch_cnn16.onnx: a small CNN trained with PyTorch on scikit-learn's digits
(bilinear to SIZE x SIZE, pixels in [0, 1]) and exported by ``torch.onnx.export`` as a
PyTorch user would (NCHW input named ``image``, batch left open, opset 18, weights
inside the file). Not run by the tests (edgeflow does not depend on PyTorch); kept so
the fixture can be made again, in a venv with ``pip install torch==2.13.0 onnx
onnxscript scikit-learn``:

    python tests/data/make_torch_cnn.py --size 16 --out tests/data/torch_cnn16.onnx
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

parser = argparse.ArgumentParser()
parser.add_argument("--size", type=int, default=16)
parser.add_argument("--out", required=True)
arguments = parser.parse_args()
torch.manual_seed(0)
digits = load_digits()
images = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]
images = F.interpolate(images, size=(arguments.size, arguments.size), mode="bilinear",
                       align_corners=False).clamp(0, 1)
labels = torch.tensor(digits.target)
model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * (arguments.size // 4) ** 2, 10))
optimizer = torch.optim.Adam(model.parameters(), 1e-2)
for epoch in range(8):
    order = torch.randperm(len(images))
    for start in range(0, len(images), 64):
        batch = order[start:start + 64]
        optimizer.zero_grad()
        F.cross_entropy(model(images[batch]), labels[batch]).backward()
        optimizer.step()
model.eval()
print("train accuracy", (model(images).argmax(1) == labels).float().mean().item())
torch.onnx.export(model, (images[:1],), arguments.out, input_names=["image"],
                  output_names=["logits"],
                  dynamic_shapes={"input": {0: torch.export.Dim("batch")}}, dynamo=True,
                  opset_version=18, external_data=False)
