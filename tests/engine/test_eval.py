"""`smpq-onnx eval` and its data/metric handling, on the bundled example and tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import conv_chain

from smpq_onnx.cli.main import cli
from smpq_onnx.engine.dataset import InputSpec, load_dataset, split_calibration
from smpq_onnx.errors import DataError
from smpq_onnx.model.importer import import_model


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def eval_json(*args: str) -> dict:
    code, out, err = invoke("eval", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_bundled_example_w8a8_close_to_fp32_and_w2a2_clearly_worse() -> None:
    w8 = eval_json("--bits", "W8A8")
    assert w8["metric"] == "top1" and w8["n"] == 750
    assert w8["fp32"] > 0.88
    assert abs(w8["quantized"] - w8["fp32"]) <= 0.005
    w2 = eval_json("--bits", "W2A2")
    assert w2["quantized"] < w8["fp32"] - 0.2


def test_eval_is_deterministic_and_fidelity_metrics_rank_bit_widths() -> None:
    first = eval_json("--bits", "W4A4", "--metric", "sqnr")
    assert eval_json("--bits", "W4A4", "--metric", "sqnr")["quantized"] == first["quantized"]
    assert eval_json("--bits", "W8A8", "--metric", "sqnr")["quantized"] > first["quantized"]
    assert eval_json("--bits", "W8A8", "--metric", "agreement")["quantized"] > 0.98
    kl8 = eval_json("--bits", "W8A8", "--metric", "kl")["quantized"]
    assert kl8 <= 0 and kl8 > eval_json("--bits", "W3A3", "--metric", "kl")["quantized"]
    cos = eval_json("--bits", "W6A6", "--metric", "cosine")
    assert 0.95 < cos["quantized"] <= 1.0 + 1e-9 and cos["fp32"] == pytest.approx(1.0)


@pytest.fixture
def chain_model(tmp_path: Path) -> Path:
    path = tmp_path / "chain.onnx"
    onnx.save(conv_chain(), str(path))
    return path


def _npz(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


def test_user_data_function_and_metric(tmp_path: Path, chain_model: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_data.py").write_text(
        "import numpy as np\n"
        "def batches():\n"
        "    rng = np.random.default_rng(0)\n"
        "    for _ in range(4):\n"
        "        yield rng.normal(size=(10, 3, 8, 8)).astype('float32')\n"
        "def mean_abs_error(outputs, reference, labels):\n"
        "    return -float(np.abs(outputs - reference).mean())\n")
    monkeypatch.chdir(tmp_path)
    report = eval_json(str(chain_model), "--data", "my_data:batches", "--metric",
                       "my_data:mean_abs_error", "--bits", "W8A8")
    assert report["n"] == 30 and report["fp32"] == 0.0 and report["quantized"] < 0


def test_image_folder_with_labels(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in (0, 1):
        folder = tmp_path / "images" / str(label)
        folder.mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, size=(12, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    specs = InputSpec.of_model(import_model(conv_chain()).ir_model)
    data = load_dataset(f"{tmp_path / 'images'}:unit", specs)
    assert data.inputs["x"].shape == (6, 3, 8, 8) and data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.inputs["x"].min() >= 0.0 and data.inputs["x"].max() <= 1.0


def test_calibration_split_is_disjoint() -> None:
    specs = InputSpec.of_model(import_model(conv_chain()).ir_model)
    x = np.arange(20 * 3 * 8 * 8, dtype=np.float32).reshape(20, 3, 8, 8)
    from smpq_onnx.engine.dataset import Dataset

    calib, evaluation = split_calibration(Dataset({"x": x}, None, "d"))
    assert len(calib) == 5 and len(evaluation) == 15
    assert not set(calib.inputs["x"][:, 0, 0, 0]) & set(evaluation.inputs["x"][:, 0, 0, 0])
    del specs


BAD_DATA = {
    "missing": (lambda d: str(d / "none.npz"), "data not found"),
    "wrong shape": (lambda d: _npz(d, x=np.zeros((4, 3, 9, 8), np.float32)),
                    r"shape \(4, 3, 9, 8\), the model expects \(N, 3, 8, 8\)"),
    "wrong rank": (lambda d: _npz(d, x=np.zeros((4, 3, 8), np.float32)), "expects rank 4"),
    "wrong dtype": (lambda d: _npz(d, x=np.zeros((4, 3, 8, 8), np.uint8)),
                    "is uint8 but the model takes float32"),
    "wrong key": (lambda d: _npz(d, images=np.zeros((4, 3, 8, 8), np.float32)),
                  r"no array for model input\(s\) \['x'\]"),
    "bad labels": (lambda d: _npz(d, x=np.zeros((8, 3, 8, 8), np.float32), y=np.zeros(3)),
                   "labels 'y' must be 8 integers"),
    "not npz": (lambda d: (d / "data.csv").write_text("1,2") and str(d / "data.csv"),
                "is not a .npz"),
    "no labels for top1": (lambda d: _npz(d, x=np.zeros((8, 3, 8, 8), np.float32)),
                           "metric 'top1' needs labels"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_one_line_and_exit_2(tmp_path: Path, chain_model: Path, case: str) -> None:
    make, message = BAD_DATA[case]
    extra = ["--metric", "top1"] if case == "no labels for top1" else []
    code, out, err = invoke("eval", str(chain_model), "--data", make(tmp_path), *extra)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    import re

    assert re.search(message, err), err


def test_unknown_metric() -> None:
    with pytest.raises(DataError, match="unknown metric 'acc'"):
        from smpq_onnx.engine.metrics import resolve_metric

        resolve_metric("acc", has_labels=True)
