"""Evaluation and calibration data: loading, validation against the model, splitting.

Sources (``--data`` / ``--calib-data``):
- ``file.npz``: arrays named like the model inputs (or ``x`` for a single input) and an
  optional ``y`` of integer labels;
- a folder of images with a preprocessing preset: ``folder`` uses ``imagenet`` (resize 256,
  center crop 224, ImageNet mean/std), ``folder:unit`` scales to [0, 1] at the model's size;
  integer-named subfolders give labels;
- ``module:function``: a function returning an iterable of batches, each an array, a dict of
  arrays, or an ``(inputs, labels)`` pair.
Every array is checked against the model's inputs (rank, static dims, dtype) before any run.

Layout: an input with a batch axis (:func:`smpq_onnx.model.shapes.batch_axes`, e.g. axis 1 of a
recurrent state ``[2, N, 128]``) holds one sample per index on axis 0, each of the input's shape
without its batch axis; :meth:`Dataset.batches` moves the samples onto the model's batch axis.
An input without a batch axis (a scalar, a fixed-size state) is stored once, without a sample
axis, and fed to every batch. Integer inputs keep their integer type.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from smpq_onnx.errors import DataError
from smpq_onnx.model.shapes import batch_axes, proto_dims, value_dims
from smpq_onnx.plugins import load_function

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CALIBRATION_SHARE = 4      # default calibration split: 1/4 of --data ...
CALIBRATION_MAX = 256      # ... and at most this many samples


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]
    """Static dims as ints; symbolic ones (the batch) as None."""
    dtype: np.dtype
    batch_axis: int | None = 0
    """The axis of ``shape`` that holds the samples; None: the input has no batch (stored once
    and fed to every batch unchanged)."""

    @property
    def sample_shape(self) -> tuple[int | None, ...]:
        """One sample's shape: ``shape`` without the batch axis."""
        return tuple(d for axis, d in enumerate(self.shape) if axis != self.batch_axis)

    @classmethod
    def of_model(cls, model: ir.Model) -> list[InputSpec]:
        initializers = set(model.graph.initializers)
        values = [v for v in model.graph.inputs if v.name not in initializers]
        axes = batch_axes({value.name or "": value_dims(value) for value in values})
        specs = []
        for value in values:
            shape = tuple(d if isinstance(d, int) else None for d in (value.shape or ()))
            dtype = np.dtype(value.dtype.numpy() if value.dtype is not None else np.float32)
            specs.append(cls(value.name or "", shape, dtype, axes[value.name or ""]))
        return specs

    @classmethod
    def of_proto(cls, model: onnx.ModelProto) -> list[InputSpec]:
        """The inputs of a model as loaded (symbolic dimensions other than the batch too)."""
        constants = {init.name for init in model.graph.initializer}
        values = [value for value in model.graph.input if value.name not in constants]
        axes = batch_axes({value.name: proto_dims(value) for value in values})
        specs = []
        for value in values:
            tensor = value.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                          for d in tensor.shape.dim)
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
                             if tensor.elem_type else np.float32)
            specs.append(cls(value.name, shape, dtype, axes[value.name]))
        return specs


def describe_inputs(specs: list[InputSpec]) -> str:
    """How each input is read and fed, for one log line."""
    parts = []
    for spec in specs:
        text = (f"input '{spec.name}': no batch axis, fed to every batch"
                if spec.batch_axis is None else
                f"input '{spec.name}': batch on axis {spec.batch_axis}")
        if not np.issubdtype(spec.dtype, np.floating):
            text += f" ({spec.dtype}, fed as is, not quantized)"
        parts.append(text)
    return "; ".join(parts)


@dataclass(frozen=True)
class Dataset:
    """Model inputs (name -> array with samples on axis 0, or the one array of an input
    without a batch axis) and optional integer labels."""

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None
    source: str
    batch_axes: Mapping[str, int | None] = field(default_factory=dict)
    """Input -> the model's batch axis for it (absent: 0; None: no batch axis)."""

    def axis(self, name: str) -> int | None:
        return self.batch_axes.get(name, 0)

    @property
    def plain(self) -> bool:
        """Whether every input is batched on axis 0 (its arrays are model-ready batches)."""
        return all(self.axis(name) == 0 for name in self.inputs)

    def __len__(self) -> int:
        return next(len(v) for k, v in self.inputs.items() if self.axis(k) is not None)

    def subset(self, index: np.ndarray | slice, source: str) -> Dataset:
        labels = self.labels[index] if self.labels is not None else None
        return Dataset({k: v if self.axis(k) is None else v[index]
                        for k, v in self.inputs.items()}, labels, source, self.batch_axes)

    def batch_counts(self, batch_size: int) -> list[int]:
        """The number of real samples in each of :meth:`batches`."""
        n = len(self)
        return [min(batch_size, n - start) for start in range(0, n, batch_size)]

    def batches(self, batch_size: int, *, pad: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """Model-ready feeds of ``batch_size`` samples: each on the model's batch axis (inputs
        without one as they are). ``pad``: a short last batch repeats its last sample up to
        ``batch_size`` (a model with a fixed batch takes no other size).

        Inputs batched on axis 0 come first (the sample count of a feed is the length of its
        first array)."""
        order = sorted(self.inputs, key=lambda k: {0: 0, None: 2}.get(self.axis(k), 1))
        for start in range(0, len(self), batch_size):
            feed = {}
            for name in order:
                array, axis = self.inputs[name], self.axis(name)
                if axis is not None:
                    array = array[start:start + batch_size]
                    if pad and len(array) < batch_size:
                        array = np.concatenate(
                            [array, np.repeat(array[-1:], batch_size - len(array), axis=0)])
                    if axis != 0:
                        array = np.ascontiguousarray(np.moveaxis(array, 0, axis))
                feed[name] = array
            yield feed


def load_dataset(source: str | Path, specs: list[InputSpec], *, hint: str = "") -> Dataset:
    """The data of ``source`` checked against ``specs``; ``hint`` ends the message of a shape
    mismatch (where the expected shape came from)."""
    text = str(source)
    preset = None
    path = Path(text)
    if not path.exists() and ":" in text and not text.endswith(".npz"):
        head, _, tail = text.rpartition(":")
        if Path(head).is_dir() and tail in PRESETS:
            path, preset = Path(head), tail
        elif re.fullmatch(r"[\w.]+", head) and re.fullmatch(r"\w+", tail):
            return _from_function(head, tail, specs, text, hint)
    if path.is_dir():
        return _from_images(path, specs, preset or "imagenet", hint)
    if not path.exists():
        raise DataError(f"data not found: {text}; give a .npz file, an image folder or "
                        "module:function")
    if path.suffix != ".npz":
        raise DataError(f"data file {text} is not a .npz; save arrays with numpy.savez")
    return _from_npz(path, specs, hint)


def conform(data: Dataset, specs: list[InputSpec], *, hint: str = "") -> Dataset:
    """``data`` checked against ``specs`` again (e.g. once symbolic dimensions are fixed).

    ``hint`` ends the message of a shape mismatch (where the expected shape came from).
    """
    return _validated(data.inputs, data.labels, specs, data.source, hint=hint)


def first_sample_shapes(data: Dataset, specs: list[InputSpec]) -> dict[str, tuple[int, ...]]:
    """Full shapes (batch 1) of the first sample of every input with a symbolic dimension
    besides the batch."""
    shapes = {}
    for spec in specs:
        if all(d is not None for d in spec.sample_shape):
            continue
        array = data.inputs[spec.name]
        if spec.batch_axis is None:
            shapes[spec.name] = tuple(int(d) for d in array.shape)
        else:
            sample = [int(d) for d in array.shape[1:]]
            shapes[spec.name] = (*sample[:spec.batch_axis], 1, *sample[spec.batch_axis:])
    return shapes


def rounded_to_float16(data: Dataset, names: Iterable[str]) -> Dataset:
    """``data`` with the inputs ``names`` rounded to float16 (kept as float32)."""
    names = [name for name in names if name in data.inputs]
    if not names:
        return data
    inputs = {k: v.astype(np.float16).astype(np.float32) if k in names else v
              for k, v in data.inputs.items()}
    return Dataset(inputs, data.labels, data.source, data.batch_axes)


def split_calibration(data: Dataset) -> tuple[Dataset, Dataset]:
    """(calibration, evaluation): the last min(N/4, 256) samples calibrate, the rest evaluate."""
    n = len(data)
    n_calib = min(max(n // CALIBRATION_SHARE, 1), CALIBRATION_MAX)
    if n - n_calib < 1:
        raise DataError(f"{data.source} has {n} sample(s): too few to split into calibration "
                        "and evaluation; give more data or a separate --calib-data")
    return (data.subset(slice(n - n_calib, n), f"{data.source}[-{n_calib}:]"),
            data.subset(slice(0, n - n_calib), f"{data.source}[:{n - n_calib}]"))


def _from_npz(path: Path, specs: list[InputSpec], hint: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path} as .npz ({e}); write it with numpy.savez") from e
    labels = arrays.pop("y", None)
    if len(specs) == 1 and specs[0].name not in arrays and "x" in arrays:
        arrays[specs[0].name] = arrays.pop("x")
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise DataError(f"{path} has no array for model input(s) {missing} (found "
                        f"{sorted(arrays)}); name arrays like the inputs, or 'x' for one input")
    return _validated({s.name: arrays[s.name] for s in specs}, labels, specs, str(path),
                      hint=hint)


def _validated(inputs: Mapping[str, np.ndarray], labels: np.ndarray | None,
               specs: list[InputSpec], source: str, *, hint: str = "") -> Dataset:
    checked: dict[str, np.ndarray] = {}
    counts = set()
    for spec in specs:
        array = np.asarray(inputs[spec.name])
        expected = spec.shape if spec.batch_axis is None else (None, *spec.sample_shape)
        if array.ndim != len(expected):
            raise DataError(f"{source}: array for input '{spec.name}' has shape {array.shape}, "
                            f"the model expects rank {len(expected)} {_shape_text(spec)}")
        for axis, (got, want) in enumerate(zip(array.shape, expected, strict=True)):
            if (axis > 0 or spec.batch_axis is None) and want is not None and got != want:
                raise DataError(f"{source}: array for input '{spec.name}' has shape "
                                f"{array.shape}, the model expects {_shape_text(spec)}"
                                + (f" {hint}" if hint else ""))
        if np.issubdtype(spec.dtype, np.floating) and not np.issubdtype(array.dtype, np.floating):
            raise DataError(f"{source}: array for input '{spec.name}' is {array.dtype} but the "
                            f"model takes {spec.dtype}; convert it (e.g. x.astype('float32') / "
                            "255 for 8-bit images)")
        if not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
            raise DataError(f"{source}: array for input '{spec.name}' is {array.dtype}, the "
                            f"model takes {spec.dtype}")
        checked[spec.name] = np.ascontiguousarray(array.astype(spec.dtype, copy=False))
        if spec.batch_axis is not None:
            counts.add(len(array))
    if not counts:
        names = ", ".join(spec.name for spec in specs)
        raise DataError(f"{source}: no model input has a batch axis ({names}); give the model "
                        "a batch dimension shared by its inputs")
    if len(counts) != 1:
        raise DataError(f"{source}: input arrays hold different sample counts {sorted(counts)}")
    n = counts.pop()
    if n == 0:
        raise DataError(f"{source} holds no samples")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != n or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{source}: labels 'y' must be {n} integers, got shape "
                            f"{labels.shape} of {labels.dtype}")
    return Dataset(checked, labels, source, {spec.name: spec.batch_axis for spec in specs})


def _shape_text(spec: InputSpec) -> str:
    """The data layout an input expects: ``(N, 3, 8, 8)`` with N the samples."""
    if spec.batch_axis is None:
        return ("(" + ", ".join("?" if d is None else str(d) for d in spec.shape)
                + ") once, without a sample axis (the input has no batch axis)")
    text = "(" + ", ".join(["N", *("?" if d is None else str(d) for d in spec.sample_shape)]) + ")"
    if spec.batch_axis != 0:
        text += (f": samples on axis 0 of the data, each the input's shape {spec.shape} "
                 f"without its batch axis {spec.batch_axis}")
    return text


def _from_function(module_name: str, function_name: str, specs: list[InputSpec],
                   source: str, hint: str) -> Dataset:
    function = load_function(f"{module_name}:{function_name}", kind="data function")
    parts: dict[str, list[np.ndarray]] = {s.name: [] for s in specs}
    labels: list[np.ndarray] = []
    for batch in function():
        inputs, batch_labels = batch if isinstance(batch, tuple) else (batch, None)
        if not isinstance(inputs, Mapping):
            if len(specs) != 1:
                raise DataError(f"{source}: batches must be dicts for a model with "
                                f"{len(specs)} inputs")
            inputs = {specs[0].name: inputs}
        for spec in specs:
            if spec.name not in inputs:
                raise DataError(f"{source}: a batch has no array for input '{spec.name}'")
            parts[spec.name].append(np.asarray(inputs[spec.name]))
        if batch_labels is not None:
            labels.append(np.asarray(batch_labels))
    if not parts[specs[0].name]:
        raise DataError(f"{source} yielded no batches")
    unbatched = {spec.name for spec in specs if spec.batch_axis is None}
    try:
        merged = {k: v[0] if k in unbatched else np.concatenate(v) for k, v in parts.items()}
    except ValueError as e:
        raise DataError(f"{source}: batches of differing shapes ({str(e).splitlines()[0]}); "
                        "yield samples of one shape") from e
    return _validated(merged, np.concatenate(labels) if labels else None, specs, source,
                      hint=hint)


def _from_images(folder: Path, specs: list[InputSpec], preset: str, hint: str) -> Dataset:
    if len(specs) != 1:
        raise DataError(f"an image folder feeds one input; the model has {len(specs)}")
    try:
        from PIL import Image
    except ImportError as e:
        raise DataError("reading image folders needs Pillow: pip install pillow") from e
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    spec = specs[0]
    if len(spec.shape) != 4 or spec.shape[1] not in (1, 3):
        raise DataError(f"image folders need a model input (N, 1|3, H, W); '{spec.name}' is "
                        f"{_shape_text(spec)}")
    channels = spec.shape[1]
    images = []
    for file in files:
        with Image.open(file) as image:
            images.append(PRESETS[preset](image.convert("L" if channels == 1 else "RGB"), spec))
    parents = {f.parent.name for f in files}
    labels = None
    if all(f.parent != folder for f in files) and all(p.isdigit() for p in parents):
        labels = np.array([int(f.parent.name) for f in files], dtype=np.int64)
    sizes = sorted({image.shape for image in images})
    if len(sizes) > 1:
        raise DataError(f"images under {folder} come out in {len(sizes)} sizes ({sizes[0]}, "
                        f"{sizes[1]}, ...) as the input '{spec.name}' has no fixed size; give "
                        "--input-shape or the imagenet preset")
    return _validated({spec.name: np.stack(images)}, labels, specs, str(folder), hint=hint)


def _imagenet(image: object, spec: InputSpec) -> np.ndarray:
    from PIL import Image

    assert isinstance(image, Image.Image)
    size = (spec.shape[2] or 224, spec.shape[3] or 224)
    short = round(max(size) * 256 / 224)
    scale = short / min(image.size)
    resized = image.resize((max(short, math.ceil(image.size[0] * scale)),
                            max(short, math.ceil(image.size[1] * scale))),
                           Image.Resampling.BILINEAR)
    left = (resized.size[0] - size[1]) // 2
    top = (resized.size[1] - size[0]) // 2
    crop = resized.crop((left, top, left + size[1], top + size[0]))
    array = np.asarray(crop, dtype=np.float32) / 255.0
    if array.ndim == 2:
        return array[None]
    return ((array - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def _unit(image: object, spec: InputSpec) -> np.ndarray:
    from PIL import Image

    assert isinstance(image, Image.Image)
    size = (spec.shape[3] or image.size[0], spec.shape[2] or image.size[1])
    array = np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


PRESETS = {"imagenet": _imagenet, "unit": _unit}
