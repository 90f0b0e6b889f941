"""The smpq-onnx command line: outputs, JSON shape, and one-line errors with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from conftest import conv_chain

from smpq_onnx import __version__
from smpq_onnx.cli.main import cli
from smpq_onnx.example import example_model_path
from smpq_onnx.model.importer import import_model


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_version() -> None:
    code, out, _ = invoke("--version")
    assert code == 0 and __version__ in out


def test_hw_list_and_show() -> None:
    code, out, _ = invoke("hw", "list")
    assert code == 0 and all(name in out for name in ("mcu", "npu", "flexible"))
    code, out, _ = invoke("hw", "show", "mcu")
    assert code == 0 and "legal_options:" in out and "W4A8" in out


def test_profile_bundled_example_by_default() -> None:
    code, out, _ = invoke("profile")
    assert code == 0, out
    assert "fashion_resnet.onnx on profile mcu" in out
    assert "fits the device: yes" in out


def test_profile_json_matches_the_cost_model(conv_chain_path: Path) -> None:
    code, out, _ = invoke("profile", str(conv_chain_path), "--hw", "flexible", "--bits", "W4A6",
                          "--json")
    assert code == 0
    report = json.loads(out)
    assert set(report["totals"]) >= {"macs", "bops", "weight_bytes", "peak_activation_bytes"}
    assert isinstance(report["fits"], bool) and isinstance(report["layers"], list)
    macs = {layer["name"]: layer["macs"] for layer in report["layers"]}
    assert macs == {"conv1": 6912, "conv2": 1536, "fc": 1920}
    assert report["totals"]["bops"] == sum(macs.values()) * 4 * 6
    assert all(layer["w_bits"] == 4 and layer["a_bits"] == 6 for layer in report["layers"])


def test_profile_with_policy_file(conv_chain_path: Path, tmp_path: Path) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"conv1": {"w_bits": 4, "a_bits": 8}}))
    code, out, err = invoke("profile", str(conv_chain_path), "--policy", str(policy),
                            "--default-bits", "W8A16", "--json")
    assert code == 0, err
    bits = {layer["name"]: (layer["w_bits"], layer["a_bits"])
            for layer in json.loads(out)["layers"]}
    assert bits == {"conv1": (4, 8), "conv2": (8, 16), "fc": (8, 16)}


def test_profile_of_a_torch_resnet_with_symbolic_batch_matches_hooks(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(Path(__file__).parents[1] / "model"))  # the torch models' helpers
    from test_macs_torch import export, hook_macs, randomize_batchnorm, resnet

    model = resnet().eval()
    randomize_batchnorm(model)
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / "resnet.onnx"
    export(model, x, path, dynamo=True)
    code, out, _ = invoke("profile", str(path), "--json")
    assert code == 0
    report = json.loads(out)
    assert [layer["macs"] for layer in report["layers"]] == list(hook_macs(model, x).values())


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    text = tmp_path / "notes.onnx"
    text.write_text("hello\n" * 50)
    data = conv_chain().SerializeToString()
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(data[: len(data) // 3])
    double_model = conv_chain()
    converted = [onnx.numpy_helper.from_array(
        onnx.numpy_helper.to_array(t).astype("float64"), t.name)
        for t in double_model.graph.initializer]
    del double_model.graph.initializer[:]
    double_model.graph.initializer.extend(converted)
    double_model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    double_model.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    double = tmp_path / "double.onnx"
    onnx.save(double_model, str(double))
    relu = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])]),
        opset_imports=[onnx.helper.make_opsetid("", 17)])
    no_layers = tmp_path / "relu.onnx"
    onnx.save(relu, str(no_layers))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("schema_version: 1\nname: [unclosed\n")
    good = tmp_path / "good.onnx"
    onnx.save(conv_chain(), str(good))
    return {
        "missing file": ([str(tmp_path / "nope.onnx")], "model file not found"),
        "not onnx": ([str(text)], "not .*ONNX model"),
        "truncated": ([str(truncated)], "truncated"),
        "non-float": ([str(double)], "DOUBLE weights; smpq-onnx takes FP32 or FP16 models"),
        "no layers": ([str(no_layers)], "no quantizable layer"),
        "unknown profile": ([str(good), "--hw", "tpu"], "unknown device profile 'tpu'"),
        "invalid yaml": ([str(good), "--hw", str(bad_yaml)], "invalid YAML"),
        "illegal bits": ([str(good), "--bits", "W2A2"], "W2A2 is not allowed"),
        "bad bits text": ([str(good), "--bits", "int8"], "cannot read bit-width option"),
        "missing policy": ([str(good), "--policy", str(tmp_path / "p.json")],
                           "policy file not found"),
    }


def test_every_bad_input_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    for case, (args, message) in _bad_inputs(tmp_path).items():
        code, out, err = invoke("profile", *args)
        assert code == 2, (case, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (case, err)
        assert lines[0].startswith("smpq-onnx: error: "), (case, err)
        assert __import__("re").search(message, lines[0]), (case, lines[0])
        assert "Traceback" not in err + out


def test_console_script_reports_errors_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    result = subprocess.run([sys.executable, "-m", "smpq_onnx", "profile", str(missing)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == f"smpq-onnx: error: model file not found: {missing}; " \
                                    "check the path"


def test_bundled_example_is_small_fp32_with_symbolic_batch() -> None:
    path = example_model_path()
    assert path.stat().st_size < 2 * 2**20
    model = import_model(path)
    assert len(model.layers) >= 8
    dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.HasField("dim_value")
