"""Train the small Fashion-MNIST ResNet bundled with smpq-onnx and export it to ONNX.

What it does
------------
1. Loads Fashion-MNIST from the IDX ``.gz`` files installed by Debian's
   ``dataset-fashion-mnist`` package (default ``/usr/share/datasets/fashion-mnist``),
   parsed with numpy + gzip (no torchvision needed).
2. Splits the 60,000 training images into the first 55,000 for training and the
   last 5,000 as a held-out validation split (used by benchmarks to search a
   quantization configuration). The 10,000-image test set is only used for reporting.
3. Trains a small ResNet-style CNN (stem conv + three BasicBlocks 16/32/64,
   global average pool, Linear(64->10)) on 1x28x28 float32 inputs in [0, 1]
   (pixels / 255, no extra normalization outside the model).
4. Exports it to ONNX (opset 17, FP32, symbolic batch dimension) as
   ``<out-dir>/fashion_resnet.onnx``, checks it with ``onnx.checker`` and verifies
   onnxruntime outputs against torch.
5. Writes a class-balanced, deterministic subset of the TEST set as
   ``<out-dir>/fashion_mnist_test.npz`` (``x``: float32 (N,1,28,28) in [0, 1],
   ``y``: int64), with N as large as possible (1000, 800 or 500) while the file stays
   under 2 MB.
6. Evaluates the exported ONNX model with onnxruntime on the full test set, the
   validation split and the bundled subset, and writes
   ``<out-dir>/fashion_resnet.json`` with the metrics and the training recipe.

How to run
----------
From the repository root (about 40 s per epoch, under 3 minutes in total, on 2 CPU cores)::

    PYTHONUNBUFFERED=1 python examples/train_fashion_resnet.py

Options: ``--data-dir``, ``--out-dir`` (default ``smpq_onnx/data``), ``--epochs``,
``--batch-size``, ``--lr``, ``--seed``. Run ``--help`` for details.

Determinism
-----------
The run is deterministic on CPU: torch and numpy are seeded, deterministic
algorithms are enforced (``torch.use_deterministic_algorithms(True)``), the
intra-op thread count is pinned to 2, and shuffling and augmentation (random
horizontal flip) draw from a dedicated seeded ``torch.Generator``. Two runs with
the same arguments on the same torch build produce bit-identical ONNX weights
(only the wall-time fields of the JSON differ).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT_DIR = Path("smpq_onnx/data")
NUM_THREADS = 2
NUM_TRAIN = 55_000
NUM_CLASSES = 10
MAX_FILE_BYTES = 2_000_000
NPZ_CANDIDATE_COUNTS = (1000, 800, 500)
ONNX_NAME = "fashion_resnet.onnx"
NPZ_NAME = "fashion_mnist_test.npz"
JSON_NAME = "fashion_resnet.json"


# --------------------------------------------------------------------------- data


def read_idx(path: Path) -> np.ndarray:
    """Read a gzip-compressed IDX file (unsigned-byte payload) into a numpy array."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    zero0, zero1, dtype_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    data = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    if data.size != math.prod(dims):
        raise ValueError(f"{path}: expected {math.prod(dims)} values, got {data.size}")
    return data.reshape(dims)


def load_split(data_dir: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images float32 (N,1,28,28) in [0,1], labels int64) for 'train' or 't10k'."""
    images = read_idx(data_dir / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(data_dir / f"{prefix}-labels-idx1-ubyte.gz")
    x = (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]
    return x, labels.astype(np.int64)


# -------------------------------------------------------------------------- model


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + (1x1 conv-BN projection if shape changes), add, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FashionResNet(nn.Module):
    """Small ResNet for 1x28x28 inputs: stem 16, stages 16/32/64, GAP, Linear(64->10)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.layer1 = BasicBlock(16, 16, stride=1)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.layer3 = BasicBlock(32, 64, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


# ----------------------------------------------------------------------- training


def set_determinism(seed: int) -> None:
    """Seed every RNG and force deterministic, fixed-thread CPU execution."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(NUM_THREADS)


def train(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> list[float]:
    """Train with SGD(momentum 0.9, nesterov, wd 5e-4) and per-step cosine LR decay.

    Returns the wall time of each epoch in seconds.
    """
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
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
        print(
            f"epoch {epoch + 1}/{epochs}: loss {total_loss / n:.4f} "
            f"train_acc {correct / n:.4f} time {dt:.1f}s"
        )
    return epoch_times


# ------------------------------------------------------------------ export / eval


def export_onnx(model: nn.Module, path: Path) -> None:
    """Export the eval-mode model to ONNX opset 17 with a symbolic batch dimension."""
    model.eval()
    dummy = torch.zeros(1, 1, 28, 28, dtype=torch.float32)
    with warnings.catch_warnings():
        # dynamo=False (TorchScript exporter) is deliberate; silence its deprecation notice.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def make_session(path: Path) -> ort.InferenceSession:
    """Create a CPU onnxruntime session with a fixed thread count."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = NUM_THREADS
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_logits(sess: ort.InferenceSession, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Run the session on x in chunks and return the stacked logits."""
    outs = [sess.run(["logits"], {"input": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs, axis=0)


def ort_accuracy(sess: ort.InferenceSession, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the ONNX model on (x, y)."""
    return float((ort_logits(sess, x).argmax(axis=1) == y).mean())


def balanced_indices(labels: np.ndarray, count: int) -> np.ndarray:
    """First count/NUM_CLASSES indices of each class, returned in ascending order."""
    per_class = count // NUM_CLASSES
    picks = [np.flatnonzero(labels == c)[:per_class] for c in range(NUM_CLASSES)]
    return np.sort(np.concatenate(picks))


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> int:
    """Write the largest balanced test subset that stays under MAX_FILE_BYTES; return N."""
    for count in NPZ_CANDIDATE_COUNTS:
        idx = balanced_indices(y, count)
        np.savez_compressed(path, x=x[idx].astype(np.float32), y=y[idx].astype(np.int64))
        if path.stat().st_size < MAX_FILE_BYTES:
            return len(idx)
    raise RuntimeError(f"{path} exceeds {MAX_FILE_BYTES} bytes even with the smallest subset")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse command-line options."""
    p = argparse.ArgumentParser(
        description="Train the bundled Fashion-MNIST ResNet and export it to ONNX."
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="folder with the Fashion-MNIST IDX .gz files (default: %(default)s)",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help="where to write the .onnx/.npz/.json files (default: %(default)s)",
    )
    p.add_argument("--epochs", type=int, default=4, help="training epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default: %(default)s)")
    p.add_argument(
        "--lr", type=float, default=0.1, help="peak SGD learning rate (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the full pipeline: load, train, export, verify, evaluate, write metadata."""
    args = parse_args(argv)
    t_start = time.perf_counter()

    needed = [
        f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")
    ]
    if not args.data_dir.is_dir() or not all((args.data_dir / n).is_file() for n in needed):
        print(
            f"Fashion-MNIST not found in {args.data_dir}; "
            "install it with `apt-get install dataset-fashion-mnist` or pass --data-dir.",
            file=sys.stderr,
        )
        return 1

    set_determinism(args.seed)
    x_all, y_all = load_split(args.data_dir, "train")
    x_test, y_test = load_split(args.data_dir, "t10k")
    x_train, y_train = x_all[:NUM_TRAIN], y_all[:NUM_TRAIN]
    x_val, y_val = x_all[NUM_TRAIN:], y_all[NUM_TRAIN:]
    print(f"data: train {len(x_train)}, val {len(x_val)}, test {len(x_test)}")

    model = FashionResNet()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: FashionResNet, {n_params} parameters")
    epoch_times = train(
        model,
        torch.from_numpy(x_train),
        torch.from_numpy(y_train),
        args.epochs,
        args.batch_size,
        args.lr,
        args.seed,
    )

    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out_dir / ONNX_NAME
    npz_path = args.out_dir / NPZ_NAME
    json_path = args.out_dir / JSON_NAME

    export_onnx(model, onnx_path)
    sess = make_session(onnx_path)
    check_x = x_test[:256]
    with torch.no_grad():
        ref = model(torch.from_numpy(check_x)).numpy()
    max_diff = float(np.abs(ort_logits(sess, check_x) - ref).max())
    if max_diff > 1e-4:
        raise RuntimeError(f"onnxruntime/torch mismatch: max |diff| = {max_diff:.3g}")
    onnx_size = onnx_path.stat().st_size
    if onnx_size >= MAX_FILE_BYTES:
        raise RuntimeError(f"{onnx_path} is {onnx_size} bytes (limit {MAX_FILE_BYTES})")

    npz_count = write_npz(npz_path, x_test, y_test)
    with np.load(npz_path) as npz:
        x_npz, y_npz = npz["x"], npz["y"]

    test_acc = ort_accuracy(sess, x_test, y_test)
    val_acc = ort_accuracy(sess, x_val, y_val)
    npz_acc = ort_accuracy(sess, x_npz, y_npz)
    wall = time.perf_counter() - t_start

    meta = {
        "model": "FashionResNet (stem16 + BasicBlocks 16/32/64 + GAP + Linear 64->10)",
        "input": "float32 (batch,1,28,28), pixels/255 in [0,1]",
        "test_accuracy_10k": round(test_acc, 4),
        "val_accuracy_5k": round(val_acc, 4),
        "npz_accuracy": round(npz_acc, 4),
        "npz_count": npz_count,
        "val_split": f"train[{NUM_TRAIN}:60000]",
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": "SGD(momentum=0.9, nesterov=True, weight_decay=5e-4)",
        "lr_schedule": f"cosine annealing per step from {args.lr} to 0 over all epochs",
        "augmentation": "random horizontal flip p=0.5 (seeded)",
        "num_threads": NUM_THREADS,
        "param_count": n_params,
        "onnx_opset": 17,
        "onnx_ort_max_abs_diff": float(f"{max_diff:.4g}"),
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort.__version__,
        "numpy_version": np.__version__,
        "epoch_seconds": [round(t, 1) for t in epoch_times],
        "wall_time_s": round(wall, 1),
        "onnx_bytes": onnx_size,
        "npz_bytes": npz_path.stat().st_size,
    }
    json_path.write_text(json.dumps(meta, indent=2) + "\n")

    print(f"onnx:  {onnx_path} ({onnx_size} bytes, ort max|diff| {max_diff:.2e})")
    print(f"npz:   {npz_path} ({meta['npz_bytes']} bytes, {npz_count} samples)")
    print(f"json:  {json_path}")
    print(
        f"accuracy: test(10k) {test_acc:.4f}  val(5k) {val_acc:.4f}  npz({npz_count}) {npz_acc:.4f}"
    )
    print(f"wall time: {wall:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
