"""Train a small depthwise-separable (MobileNet-style) net on Fashion-MNIST; export it to ONNX.

A second benchmark model next to the bundled ResNet (``train_fashion_resnet.py``): most of
its compute sits in depthwise (``groups == channels``) and pointwise 1x1 convolutions, the
layer mix of mobile networks, whose depthwise weights are often sensitive to low-bit
quantization.

What it does
------------
1. Loads Fashion-MNIST from the IDX ``.gz`` files of Debian's ``dataset-fashion-mnist``
   (default ``/usr/share/datasets/fashion-mnist``) with the ResNet script's loader, and uses
   the same splits: train[:55000] for training, train[55000:60000] as the validation split
   (the benchmarks' search and calibration images), the 10,000-image test set for reporting.
2. Trains ``FashionDSNet`` (below) on 1x28x28 float32 inputs in [0, 1] (pixels / 255):
   AdamW with per-step cosine learning-rate decay, random horizontal flips.
3. Exports it to ONNX (opset 17, FP32, symbolic batch dimension; the eval-mode exporter
   folds BatchNorm into the convolutions and ReLU6 becomes ``Clip(0, 6)``), checks it with
   ``onnx.checker`` and compares onnxruntime's logits with torch's.
4. Measures the ONNX model's top-1 with onnxruntime (CPU) on the test set and the
   validation split and writes a JSON card next to the ``.onnx`` file.

How to run
----------
From the repository root (single-threaded; about 75 s per epoch on one core)::

    PYTHONUNBUFFERED=1 python examples/train_fashion_dsnet.py

Options: ``--out`` (default ``benchmarks/models/fashion_dsnet.onnx``; the card is the same
path with ``.json``), ``--epochs``, ``--batch-size``, ``--lr``, ``--weight-decay``, ``--seed``,
``--data-dir``.

Determinism
-----------
torch and numpy are seeded, deterministic algorithms are enforced, torch runs on one
intra-op thread, and shuffling and flips draw from a dedicated seeded ``torch.Generator``.
Two runs with the same arguments on the same torch build give bit-identical ONNX weights
(only the timing fields of the JSON differ).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_fashion_resnet import (
    DEFAULT_DATA_DIR,
    NUM_CLASSES,
    NUM_TRAIN,
    export_onnx,
    load_split,
    ort_accuracy,
    ort_logits,
)

DEFAULT_OUT = Path("benchmarks/models/fashion_dsnet.onnx")
NUM_THREADS = 1
MAX_ONNX_BYTES = 500_000


# -------------------------------------------------------------------------- model


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ ReLU6)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class SeparableBlock(nn.Module):
    """Depthwise 3x3 conv-BN-ReLU6, then pointwise 1x1 conv-BN-ReLU6 (MobileNetV1 block)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.depthwise = conv_bn(in_ch, in_ch, 3, stride=stride, groups=in_ch)
        self.pointwise = conv_bn(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class InvertedResidual(nn.Module):
    """Expand 1x1-BN-ReLU6, depthwise 3x3-BN-ReLU6, linear project 1x1-BN, add the input."""

    def __init__(self, channels: int, expansion: int) -> None:
        super().__init__()
        hidden = channels * expansion
        self.expand = conv_bn(channels, hidden, 1)
        self.depthwise = conv_bn(hidden, hidden, 3, groups=hidden)
        self.project = conv_bn(hidden, channels, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.depthwise(self.expand(x)))


class FashionDSNet(nn.Module):
    """MobileNet-style net for 1x28x28 inputs.

    stem conv3x3 1->16 (28x28) | separable s2 16->32 (14x14) | separable 32->64 (14x14)
    | separable s2 64->96 (7x7) | inverted residual 96 (x2 expansion, 7x7)
    | global average pool | Linear 96->10.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = conv_bn(1, 16, 3)
        self.block1 = SeparableBlock(16, 32, stride=2)
        self.block2 = SeparableBlock(32, 64, stride=1)
        self.block3 = SeparableBlock(64, 96, stride=2)
        self.block4 = InvertedResidual(96, expansion=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(96, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.stem(x)))
        x = self.block4(self.block3(x))
        return self.fc(self.flatten(self.pool(x)))


# ----------------------------------------------------------------------- training


def set_determinism(seed: int) -> None:
    """Seed every RNG and force deterministic, single-threaded CPU execution."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(NUM_THREADS)


def train(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, *, epochs: int,
          batch_size: int, lr: float, weight_decay: float, seed: int) -> list[float]:
    """AdamW with per-step cosine decay from ``lr`` to 0; returns each epoch's wall time."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs * steps_per_epoch
    )
    gen = torch.Generator().manual_seed(seed)
    epoch_times: list[float] = []
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(x_train), generator=gen)
        total_loss, correct = 0.0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * batch_size : (step + 1) * batch_size]
            xb, yb = x_train[idx], y_train[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        dt = time.perf_counter() - t0
        epoch_times.append(dt)
        n = len(x_train)
        print(f"epoch {epoch + 1}/{epochs}: loss {total_loss / n:.4f} "
              f"train_acc {correct / n:.4f} time {dt:.1f}s")
    return epoch_times


# ------------------------------------------------------------------ export / eval


def make_session(path: Path) -> ort.InferenceSession:
    """A single-threaded CPU onnxruntime session."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = NUM_THREADS
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def weights_sha256(path: Path) -> str:
    """Digest of the ONNX initializers (names and raw bytes), to compare two runs."""
    digest = hashlib.sha256()
    for init in onnx.load(str(path)).graph.initializer:
        digest.update(init.name.encode())
        digest.update(numpy_helper.to_array(init).tobytes())
    return digest.hexdigest()


def layer_summary(model: nn.Module) -> dict[str, int]:
    """Counts of the conv kinds in the model."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return {
        "depthwise_3x3": sum(m.groups > 1 for m in convs),
        "pointwise_1x1": sum(m.groups == 1 and m.kernel_size == (1, 1) for m in convs),
        "dense_3x3": sum(m.groups == 1 and m.kernel_size == (3, 3) for m in convs),
        "linear": sum(isinstance(m, nn.Linear) for m in model.modules()),
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse command-line options."""
    p = argparse.ArgumentParser(
        description="Train a depthwise-separable Fashion-MNIST net and export it to ONNX."
    )
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="folder with the Fashion-MNIST IDX .gz files (default: %(default)s)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="ONNX file to write; the JSON card goes next to it with .json "
                        "(default: %(default)s)")
    p.add_argument("--epochs", type=int, default=4, help="training epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=4e-3,
                   help="peak AdamW learning rate (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=1e-4,
                   help="AdamW weight decay (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Load, train, export, verify, evaluate with onnxruntime, write the JSON card."""
    args = parse_args(argv)
    t_start = time.perf_counter()

    needed = [
        f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")
    ]
    if not args.data_dir.is_dir() or not all((args.data_dir / n).is_file() for n in needed):
        print(f"Fashion-MNIST not found in {args.data_dir}; "
              "install it with `apt-get install dataset-fashion-mnist` or pass --data-dir.",
              file=sys.stderr)
        return 1

    set_determinism(args.seed)
    x_all, y_all = load_split(args.data_dir, "train")
    x_test, y_test = load_split(args.data_dir, "t10k")
    x_train, y_train = x_all[:NUM_TRAIN], y_all[:NUM_TRAIN]
    x_val, y_val = x_all[NUM_TRAIN:], y_all[NUM_TRAIN:]
    print(f"data: train {len(x_train)}, val {len(x_val)}, test {len(x_test)}")

    model = FashionDSNet()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: FashionDSNet, {n_params} parameters")
    t_train = time.perf_counter()
    epoch_times = train(model, torch.from_numpy(x_train), torch.from_numpy(y_train),
                        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        weight_decay=args.weight_decay, seed=args.seed)
    train_s = time.perf_counter() - t_train

    onnx_path: Path = args.out
    json_path = onnx_path.with_suffix(".json")
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, onnx_path)
    sess = make_session(onnx_path)
    check_x = x_test[:256]
    with torch.no_grad():
        ref = model(torch.from_numpy(check_x)).numpy()
    max_diff = float(np.abs(ort_logits(sess, check_x) - ref).max())
    if max_diff > 1e-4:
        raise RuntimeError(f"onnxruntime/torch mismatch: max |diff| = {max_diff:.3g}")
    onnx_size = onnx_path.stat().st_size
    if onnx_size >= MAX_ONNX_BYTES:
        raise RuntimeError(f"{onnx_path} is {onnx_size} bytes (limit {MAX_ONNX_BYTES})")

    test_acc = ort_accuracy(sess, x_test, y_test)
    val_acc = ort_accuracy(sess, x_val, y_val)
    wall = time.perf_counter() - t_start

    meta = {
        "model": "FashionDSNet (stem conv3x3 1->16 + separable s2 16->32, 32->64, s2 64->96 "
                 "+ inverted residual 96 (x2 expansion) + GAP + Linear 96->10; BatchNorm, "
                 "ReLU6)",
        "input": "float32 (batch,1,28,28), pixels/255 in [0,1]",
        "layers": layer_summary(model),
        "param_count": n_params,
        "test_accuracy_10k": round(test_acc, 4),
        "val_accuracy_5k": round(val_acc, 4),
        "accuracy_measured_with": "onnxruntime CPUExecutionProvider, FP32",
        "train_split": f"train[:{NUM_TRAIN}]",
        "val_split": f"train[{NUM_TRAIN}:60000]",
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": f"AdamW(weight_decay={args.weight_decay})",
        "lr_schedule": f"cosine annealing per step from {args.lr} to 0 over all epochs",
        "augmentation": "random horizontal flip p=0.5 (seeded)",
        "num_threads": NUM_THREADS,
        "onnx_opset": 17,
        "onnx_ort_max_abs_diff": float(f"{max_diff:.4g}"),
        "onnx_weights_sha256": weights_sha256(onnx_path),
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort.__version__,
        "numpy_version": np.__version__,
        "epoch_seconds": [round(t, 1) for t in epoch_times],
        "train_time_s": round(train_s, 1),
        "wall_time_s": round(wall, 1),
        "onnx_bytes": onnx_size,
    }
    json_path.write_text(json.dumps(meta, indent=2) + "\n")

    print(f"onnx:  {onnx_path} ({onnx_size} bytes, ort max|diff| {max_diff:.2e})")
    print(f"json:  {json_path}")
    print(f"accuracy: test(10k) {test_acc:.4f}  val(5k) {val_acc:.4f}")
    print(f"train time: {train_s:.1f}s  wall time: {wall:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
