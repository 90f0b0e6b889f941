"""The bundled example: a small ResNet trained on Fashion-MNIST and real test images.

Made by ``examples/train_fashion_resnet.py``; its measured accuracy is in ``fashion_resnet.json``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_DATA = "smpq_onnx.data"


def _path(name: str) -> Path:
    return Path(str(resources.files(_DATA) / name))


def example_model_path() -> Path:
    return _path("fashion_resnet.onnx")


def example_data_path() -> Path:
    return _path("fashion_mnist_test.npz")


def example_card_path() -> Path:
    return _path("fashion_resnet.json")
