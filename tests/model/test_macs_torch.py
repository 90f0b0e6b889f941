"""MACs of imported layers equal MACs counted by torch forward hooks, layer by layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from smpq_onnx.model.importer import import_model  # noqa: E402


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


def resnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def depthwise_net() -> nn.Module:
    """MobileNetV2-style inverted residual pieces, a transposed conv and a 3-D Linear."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU6(),
        nn.Conv2d(48, 48, 5, 2, 2, groups=48, bias=False), nn.BatchNorm2d(48), nn.ReLU6(),
        nn.ConvTranspose2d(48, 24, 2, stride=2, groups=2),
        nn.Conv2d(24, 8, 1), nn.Flatten(2), nn.Linear(256, 12),
    )


def hook_macs(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """MACs per sample of every Conv/ConvTranspose/Linear, keyed by its weight's name."""
    counts: dict[str, int] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(module, inputs, output):  # type: ignore[no-untyped-def]
            batch = inputs[0].shape[0]
            if isinstance(module, nn.Conv2d):
                k = module.in_channels // module.groups * int(np.prod(module.kernel_size))
                counts[f"{name}.weight"] = output.numel() // batch * k
            elif isinstance(module, nn.ConvTranspose2d):
                k = module.out_channels // module.groups * int(np.prod(module.kernel_size))
                counts[f"{name}.weight"] = inputs[0].numel() // batch * k
            elif isinstance(module, nn.Linear):
                counts[f"{name}.weight"] = output.numel() // batch * module.in_features
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return counts


def randomize_batchnorm(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0, 0.5, generator=generator)


def export(model: nn.Module, x: torch.Tensor, path: Path, *, dynamo: bool) -> None:
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(model, (x,), str(path), dynamo=True, dynamic_shapes=({0: batch},),
                          input_names=["x"])
    else:
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}}, do_constant_folding=False,
                          training=torch.onnx.TrainingMode.PRESERVE)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("build,size", [(resnet, 32), (depthwise_net, 32)],
                         ids=["resnet", "depthwise"])
def test_macs_match_torch_hooks(tmp_path: Path, build, size: int, dynamo: bool) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build().eval()
    randomize_batchnorm(model)
    x = torch.randn(2, 3, size, size)
    expected = hook_macs(model, x)
    path = tmp_path / "model.onnx"
    export(model, x, path, dynamo=dynamo)

    imported = import_model(path)
    assert imported.ir_model.graph.inputs[0].shape[0] != 1 or dynamo  # batch stays symbolic
    # Layers come in execution order, as the hooks fire; names match where the exporter kept them.
    assert [layer.macs for layer in imported.layers] == list(expected.values())
    named = {layer.weight: layer.macs for layer in imported.layers if layer.weight in expected}
    assert len(named) >= len(expected) - 1
    assert named == {name: expected[name] for name in named}
    assert imported.total_macs == sum(expected.values())
    assert "BatchNormalization" not in [n.op_type for n in imported.ir_model.graph]
