"""Options, policies, policy files and their validation against the search space."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import conv_chain
from hypothesis import given
from hypothesis import strategies as st

from smpq_onnx.errors import PolicyError
from smpq_onnx.hardware.profile import load_profile
from smpq_onnx.model.importer import import_model
from smpq_onnx.quant.options import FP32, QUANT_BITS, Option
from smpq_onnx.quant.policy import Policy, read_policy, write_policy
from smpq_onnx.strategy.space import SearchSpace


@given(st.sampled_from(QUANT_BITS), st.sampled_from(QUANT_BITS))
def test_option_text_round_trips(w: int, a: int) -> None:
    option = Option(w, a)
    assert Option.parse(str(option)) == option
    assert Option.parse(str(option).lower()) == option


@pytest.mark.parametrize("text", ["W8", "8x8", "W9A8", "W1A8", "W8A64", ""])
def test_bad_option_text(text: str) -> None:
    with pytest.raises(PolicyError):
        Option.parse(text)


def test_fp32() -> None:
    assert Option.parse("fp32") == FP32 and str(FP32) == "FP32" and FP32.is_float


def test_policies_hash_by_content() -> None:
    a = Policy({"x": Option(4, 8), "y": FP32})
    b = Policy({"y": FP32, "x": Option(4, 8)})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.replace(x=Option(8, 8)) != a


def test_policy_file_round_trip(tmp_path: Path) -> None:
    policy = Policy({"conv1": Option(4, 8), "fc": FP32})
    path = tmp_path / "p.json"
    write_policy(policy, path)
    assert read_policy(path) == policy
    assert json.loads(path.read_text())["conv1"] == {"w_bits": 4, "a_bits": 8}
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # no temp file left


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace.build(import_model(conv_chain()), load_profile("mcu"))


def _file(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_validation_errors(space: SearchSpace, tmp_path: Path) -> None:
    full = {n: {"w_bits": 8, "a_bits": 8} for n in ("conv1", "conv2", "fc")}
    assert space.validate(read_policy(_file(tmp_path, full))) == space.uniform(Option(8, 8))
    with pytest.raises(PolicyError, match="unknown layer.*'conv9'"):
        space.validate(read_policy(_file(tmp_path, {**full, "conv9": full["fc"]})))
    partial = {"conv1": full["conv1"]}
    with pytest.raises(PolicyError, match="misses layer.*'conv2', 'fc'.*--default-bits"):
        space.validate(read_policy(_file(tmp_path, partial)))
    filled = read_policy(_file(tmp_path, partial), default=Option(4, 8),
                         layer_names=["conv1", "conv2", "fc"])
    assert space.validate(filled)["fc"] == Option(4, 8)
    with pytest.raises(PolicyError, match="layer 'conv2': W4A16 is not allowed.*W4A8, W8A8"):
        space.validate(read_policy(_file(tmp_path, {**full, "conv2": {"w_bits": 4,
                                                                      "a_bits": 16}})))


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ([1, 2], "expected an object"),
    ({"conv1": {"w_bits": 8}}, "must map to"),
    ({"conv1": {"w_bits": "8", "a_bits": 8}}, "integer bits"),
    ({"conv1": {"w_bits": 9, "a_bits": 8}}, "weight bit-width 9 is not supported"),
])
def test_bad_policy_files(tmp_path: Path, content: object, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        read_policy(_file(tmp_path, content))


def test_group_members_must_share_activation_bits() -> None:
    import numpy as np
    from conftest import make_model
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="a"),
             helper.make_node("Conv", ["x", "w2"], ["b"], name="b"),
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 2])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])],
                       {"w1": rng.normal(size=(2, 2, 1, 1)).astype(np.float32),
                        "w2": rng.normal(size=(2, 2, 1, 1)).astype(np.float32)})
    space = SearchSpace.build(import_model(proto), load_profile("mcu"))
    ok = Policy({"a": Option(4, 8), "b": Option(8, 8)})
    assert space.validate(ok) == ok
    with pytest.raises(PolicyError, match="share a quantizer"):
        space.validate(Policy({"a": Option(8, 16), "b": Option(8, 8)}))
