"""Models as users bring them: old opsets, symbolic image sizes, a batch fixed at 1; and
output paths that cannot be written. Every refusal is one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import dynamic_cnn, old_opset_cnn
from onnx import TensorProto, helper

from smpq_onnx.cli.main import cli

FAST = ("--rounding", "nearest", "--no-bias-correction")


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("smpq-onnx: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def images(path: Path, n: int, size: int, seed: int = 0) -> Path:
    x = np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)
    np.savez(path, x=x)
    return path


# --- old opsets --------------------------------------------------------------------------

def test_an_opset_9_model_with_upsample_and_batchnorm_profiles_evaluates_and_applies(
        tmp_path: Path) -> None:
    model = save(old_opset_cnn(9), tmp_path / "opset9.onnx")
    data = images(tmp_path / "data.npz", 40, 16)

    code, out, err = invoke("profile", model, "--hw", "flexible", "--bits", "W8A8", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [layer["name"] for layer in report["layers"]] == ["conv1", "conv2", "fc"]
    assert report["input_shapes"] == {"x": [1, 3, 16, 16]}

    code, out, err = invoke("eval", model, "--data", data, "--bits", "W8A8", *FAST, "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert scores["n"] == 30 and scores["fp32"] == 1.0 and scores["deployed"] >= 0.9

    written = tmp_path / "out" / "opset9.qdq.onnx"
    code, out, err = invoke("apply", model, "--data", data, "--bits", "W8A8", *FAST,
                            "--out", written, "--json")
    assert code == 0, err
    applied = json.loads(out)
    assert applied["match"] and applied["opset"] == 13
    emitted = onnx.load(str(written))
    onnx.checker.check_model(emitted)
    assert {"QuantizeLinear", "DequantizeLinear", "Resize"} <= {n.op_type
                                                               for n in emitted.graph.node}
    session = ort.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    x = np.load(data)["x"][:4]
    assert session.run(None, {"x": x})[0].shape == (4, 5)


def test_an_opset_6_model_is_refused_with_one_line(tmp_path: Path) -> None:
    model = old_opset_cnn(7)
    model.opset_import[0].version = 6
    model.graph.node[4].attribute.pop()  # opset-6 Upsample has no 'scales' list
    model.graph.node[4].attribute.extend([onnx.helper.make_attribute("height_scale", 2.0),
                                          onnx.helper.make_attribute("width_scale", 2.0)])
    path = save(model, tmp_path / "opset6.onnx")
    code, _, err = invoke("profile", path)
    assert_one_line_error(code, err, "uses opset 6, older than 7", "re-export the model")


def test_a_model_the_converter_cannot_upgrade_names_the_blocking_op(tmp_path: Path) -> None:
    model = old_opset_cnn(8)
    body = helper.make_graph(
        [helper.make_node("Add", ["state", "item"], ["next"]),
         helper.make_node("Identity", ["next"], ["out"])], "body",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [5]) for n in ("state", "item")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [5]) for n in ("next", "out")])
    # A Scan-8 with sequence lengths has no opset-9 form.
    model.graph.node.append(helper.make_node("Scan", ["lens", "y", "seq"], ["total", "steps"],
                                             name="accumulate", num_scan_inputs=1, body=body))
    model.graph.input.extend([helper.make_tensor_value_info("lens", TensorProto.INT32, [1]),
                              helper.make_tensor_value_info("seq", TensorProto.FLOAT, [1, 3, 5])])
    model.graph.output.extend([
        helper.make_tensor_value_info("total", TensorProto.FLOAT, [1, 5]),
        helper.make_tensor_value_info("steps", TensorProto.FLOAT, [1, 3, 5])])
    onnx.checker.check_model(model)
    code, _, err = invoke("profile", save(model, tmp_path / "scan.onnx"))
    assert_one_line_error(code, err, "cannot upgrade it from opset 8 to 13",
                          "node 'accumulate' (Scan) blocks it")


# --- symbolic image sizes ----------------------------------------------------------------

def test_symbolic_height_and_width_come_from_the_data(tmp_path: Path) -> None:
    model = save(dynamic_cnn(), tmp_path / "fcn.onnx")
    data = images(tmp_path / "d24.npz", 40, 24)
    code, out, err = invoke("eval", model, "--data", data, "--bits", "W8A8", *FAST, "--json")
    assert code == 0, err
    assert json.loads(out)["deployed"] >= 0.9
    written = tmp_path / "fcn.qdq.onnx"
    code, out, err = invoke("apply", model, "--data", data, "--bits", "W8A8", *FAST,
                            "--out", written, "--json")
    assert code == 0 and json.loads(out)["match"], err
    dims = onnx.load(str(written)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, 24, 24]


def test_input_shape_gives_the_size_and_macs_scale_with_height_times_width(
        tmp_path: Path) -> None:
    model = save(dynamic_cnn(), tmp_path / "fcn.onnx")

    def profiled(shape: str) -> dict:
        code, out, err = invoke("profile", model, "--input-shape", f"x={shape}", "--json")
        assert code == 0, err
        return json.loads(out)

    small, large = profiled("1x3x16x16"), profiled("1x3x32x32")
    assert small["input_shapes"] == {"x": [1, 3, 16, 16]}
    assert large["input_shapes"] == {"x": [1, 3, 32, 32]}
    layer_macs = [{layer["name"]: layer["macs"] for layer in r["layers"]} for r in (small, large)]
    assert layer_macs[1]["conv1"] == 4 * layer_macs[0]["conv1"] == 4 * 4 * 16 * 16 * 27
    assert layer_macs[1]["conv2"] == 4 * layer_macs[0]["conv2"]
    assert large["totals"]["peak_activation_bytes"] > small["totals"]["peak_activation_bytes"]
    code, out, err = invoke("profile", model, "--input-shape", "x=1x3x16x16")
    assert code == 0 and "per sample at input x=1x3x16x16" in out, err


def test_without_data_or_input_shape_a_symbolic_size_is_one_line(tmp_path: Path) -> None:
    code, _, err = invoke("profile", save(dynamic_cnn(), tmp_path / "fcn.onnx"))
    assert_one_line_error(code, err, "symbolic dimension 'H'", "--input-shape x=1x3xHxW")


def test_data_that_does_not_match_the_input_shape_is_one_line(tmp_path: Path) -> None:
    model = save(dynamic_cnn(), tmp_path / "fcn.onnx")
    data = images(tmp_path / "d32.npz", 40, 32)
    code, _, err = invoke("eval", model, "--data", data, "--input-shape", "x=1x3x16x16",
                          "--bits", "W8A8", *FAST)
    assert_one_line_error(code, err, "has shape (40, 3, 32, 32), the model expects "
                          "(N, 3, 16, 16)", "--input-shape x=1x3x16x16")


@pytest.mark.parametrize(("value", "fragment"), [
    ("x:1x3x16x16", "is not NAME=DIMS"),
    ("x=1x3x16xW", "is not NAME=DIMS"),
    ("x=", "is not NAME=DIMS"),
    ("x=1x3x16", "has rank 3 but input 'x' has rank 4"),
    ("image=1x3x16x16", "the model has no input 'image' (inputs: x)"),
    ("x=8x3x16x16", "write the batch (axis 0) as 1"),
    ("x=1x3x0x16", "has a dimension <= 0"),
    ("x=1x4x16x16", "the model fixes it at 3"),
])
@pytest.mark.parametrize("command", ["profile", "eval", "apply", "search"])
def test_a_bad_input_shape_is_one_line_with_exit_2(tmp_path: Path, command: str, value: str,
                                                   fragment: str) -> None:
    model = save(dynamic_cnn(), tmp_path / "fcn.onnx")
    data = images(tmp_path / "d.npz", 8, 16)
    extra = {"profile": [], "eval": ["--data", data], "search": ["--data", data, *FAST],
             "apply": ["--data", data, "--bits", "W8A8", "--out", tmp_path / "o.onnx", *FAST]}
    code, _, err = invoke(command, model, "--input-shape", value, *extra[command])
    assert_one_line_error(code, err, fragment)


def test_the_search_report_says_which_input_shape_the_costs_are_for(tmp_path: Path) -> None:
    model = save(dynamic_cnn(), tmp_path / "fcn.onnx")
    data = images(tmp_path / "d.npz", 40, 20)
    code, out, err = invoke("search", model, "--data", data, "--samples", "1", "--rounds", "1",
                            "--out", tmp_path / "run", *FAST, "--json")
    assert code == 0, err
    assert json.loads(out)["input_shapes"] == {"x": [1, 3, 20, 20]}
    assert "input shape(s) `x` 1x3x20x20" in (tmp_path / "run" / "report.md").read_text()


# --- a batch fixed at 1 ------------------------------------------------------------------

def test_a_model_whose_batch_is_fixed_at_1_evaluates_and_applies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMPQ_CACHE_DIR", str(tmp_path / "cache"))
    model = save(dynamic_cnn(batch=1, height=16, width=16), tmp_path / "zoo.onnx")
    data = images(tmp_path / "d.npz", 40, 16)
    # The default rounding (GPTQ + bias correction) runs its statistics one sample at a time.
    code, out, err = invoke("eval", model, "--data", data, "--bits", "W8A8", "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert scores["n"] == 30 and scores["deployed"] >= 0.9
    written = tmp_path / "zoo.qdq.onnx"
    code, out, err = invoke("apply", model, "--data", data, "--bits", "W4A8", "--out", written,
                            "--json")
    assert code == 0 and json.loads(out)["match"], err
    dims = onnx.load(str(written)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 16, 16]


# --- output paths ------------------------------------------------------------------------

def test_apply_out_naming_an_existing_directory_is_one_line(tmp_path: Path) -> None:
    model = save(dynamic_cnn(height=16, width=16), tmp_path / "m.onnx")
    data = images(tmp_path / "d.npz", 8, 16)
    (tmp_path / "results").mkdir()
    code, _, err = invoke("apply", model, "--calib-data", data, "--bits", "W8A8", *FAST,
                          "--out", tmp_path / "results")
    assert_one_line_error(code, err, "is an existing directory",
                          str(tmp_path / "results" / "model.qdq.onnx"))


def test_search_out_naming_an_existing_file_is_one_line(tmp_path: Path) -> None:
    model = save(dynamic_cnn(height=16, width=16), tmp_path / "m.onnx")
    data = images(tmp_path / "d.npz", 8, 16)
    code, _, err = invoke("search", model, "--data", data, *FAST, "--out", data)
    assert_one_line_error(code, err, "is an existing file", "give a folder path")
