"""The benchmarks' models with disjoint search / held-out / calibration splits.

- Fashion-MNIST ResNet (the bundled example, real labels, top-1): the training script's
  validation split (the last 5,000 training images, ``examples/train_fashion_resnet.py``)
  gives the search split (its first images) and the calibration split (its last images);
  the held-out split is the 10,000-image test set.
- Fashion-MNIST depthwise-separable net (``benchmarks/models/fashion_dsnet.onnx``, made by
  ``examples/train_fashion_dsnet.py``, same splits and metric as the ResNet): MobileNet-style
  depthwise 3x3 + pointwise 1x1 convolutions.
- MobileNetV2 with ImageNet weights (agreement with FP32 top-1): crops and flips of natural
  photos, the photos themselves split three ways (every fifth photo calibrates, the others
  alternate between search and held-out), so no photo feeds two splits. The 20 labeled
  ImageNet photos give a top-1 sanity line (they are also in the photo pool).
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "examples"))

from harness import assets
from smpq_onnx.engine.dataset import Dataset
from smpq_onnx.engine.metrics import BUILTIN_METRICS, Metric
from smpq_onnx.example import example_model_path
from smpq_onnx.model.importer import ImportedModel, import_model

FASHION_VALIDATION = 5000  # train[55000:60000], as held out by the training scripts
FASHION_DSNET_PATH = Path(__file__).parents[1] / "models" / "fashion_dsnet.onnx"


@dataclass
class ModelData:
    key: str
    title: str
    model: ImportedModel
    metric: Metric
    search: Dataset
    heldout: Dataset
    calib: Dataset
    sanity: Dataset | None = None
    """Labeled images for a top-1 sanity line (MobileNetV2's 20 ImageNet photos)."""
    splits: dict[str, str] = field(default_factory=dict)
    """What each split is, in words, for RESULTS.md."""


def _input_name(model: ImportedModel) -> str:
    return model.ir_model.graph.inputs[0].name or "input"


def _fashion(model_path: Path, key: str, title: str, *, n_search: int, n_calib: int,
             n_test: int, search_offset: int = 0) -> ModelData:
    """A Fashion-MNIST model on the training scripts' splits: search on
    val[search_offset:search_offset + n_search], calibrate on val[-n_calib:], report on
    test[:n_test]."""
    if search_offset + n_search + n_calib > FASHION_VALIDATION:
        raise ValueError(f"search ({search_offset} + {n_search}) + calibration ({n_calib}) "
                         f"images exceed the {FASHION_VALIDATION}-image validation split")
    data_dir = assets.ensure_fashion_mnist()
    from train_fashion_resnet import NUM_TRAIN, load_split

    x_train, y_train = load_split(data_dir, "train")
    x_test, y_test = load_split(data_dir, "t10k")
    model = import_model(model_path)
    name = _input_name(model)
    val_x, val_y = x_train[NUM_TRAIN:], y_train[NUM_TRAIN:]
    end = len(val_x)
    chosen = slice(search_offset, search_offset + n_search)
    search = Dataset({name: val_x[chosen]}, val_y[chosen], "fashion val search")
    calib = Dataset({name: val_x[end - n_calib:]}, val_y[end - n_calib:], "fashion val calib")
    test = Dataset({name: x_test[:n_test]}, y_test[:n_test], "fashion test")
    first, last = NUM_TRAIN, NUM_TRAIN + end
    splits = {
        "search": f"train[{first + search_offset}:{first + search_offset + n_search}] "
                  f"({n_search} images, labels)",
        "calibration": f"train[{last - n_calib}:{last}] ({n_calib} images)",
        "held-out": f"test[:{n_test}] ({n_test} images, labels)",
    }
    return ModelData(key, title, model, BUILTIN_METRICS["top1"], search, test, calib, None,
                     splits)


def fashion_resnet(*, n_search: int, n_calib: int, n_test: int,
                   search_offset: int = 0) -> ModelData:
    """Search on val[search_offset:][:n_search], calibrate on val[-n_calib:], report on
    test[:n_test]."""
    return _fashion(example_model_path(), "fashion_resnet", "Fashion-MNIST ResNet (bundled)",
                    n_search=n_search, n_calib=n_calib, n_test=n_test,
                    search_offset=search_offset)


def fashion_dsnet(*, n_search: int, n_calib: int, n_test: int,
                  search_offset: int = 0) -> ModelData:
    """The depthwise-separable net (``benchmarks/models/fashion_dsnet.onnx``, made by
    ``examples/train_fashion_dsnet.py``) on the same splits as ``fashion_resnet``."""
    return _fashion(FASHION_DSNET_PATH, "fashion_dsnet", "Fashion-MNIST depthwise-separable net",
                    n_search=n_search, n_calib=n_calib, n_test=n_test,
                    search_offset=search_offset)


def mobilenet_v2(*, n_search: int, n_heldout: int, n_calib: int) -> ModelData:
    """Natural-image splits from disjoint photos; agreement with FP32 top-1."""
    assets.ensure_packages()
    from harness.mobilenet_v2 import export_mobilenet_v2

    with tempfile.TemporaryDirectory() as tmp:
        model = import_model(export_mobilenet_v2(Path(tmp) / "mobilenet_v2.onnx"))
    name = _input_name(model)
    files = assets.natural_image_files()
    calib_files = files[0::5]
    rest = [f for i, f in enumerate(files) if i % 5]
    search_files, heldout_files = rest[0::2], rest[1::2]
    search = Dataset({name: assets.natural_images(n_search, seed=1, files=search_files)}, None,
                     "natural search")
    heldout = Dataset({name: assets.natural_images(n_heldout, seed=2, files=heldout_files)},
                      None, "natural held-out")
    calib = Dataset({name: assets.natural_images(n_calib, seed=3, files=calib_files)}, None,
                    "natural calib")
    images, labels = assets.labeled_imagenet()
    sanity = Dataset({name: images}, labels, "labeled imagenet")
    splits = {
        "search": f"{n_search} crops/flips of {len(search_files)} photos",
        "calibration": f"{n_calib} crops/flips of {len(calib_files)} other photos",
        "held-out": f"{n_heldout} crops/flips of {len(heldout_files)} other photos",
        "sanity": f"{len(labels)} labeled ImageNet photos (foolbox), center crops, top-1",
    }
    return ModelData("mobilenet_v2", "MobileNetV2 (ImageNet weights)", model,
                     BUILTIN_METRICS["agreement"], search, heldout, calib, sanity, splits)


def describe(data: ModelData) -> dict[str, object]:
    """JSON-ready facts about a model's data."""
    return {"title": data.title, "metric": data.metric.name, "percent": data.metric.percent,
            "layers": len(data.model.layers), "macs": data.model.total_macs,
            "splits": data.splits,
            "sizes": {"search": len(data.search), "heldout": len(data.heldout),
                      "calibration": len(data.calib),
                      "sanity": len(data.sanity) if data.sanity is not None else 0},
            "search_labels": data.search.labels is not None}
