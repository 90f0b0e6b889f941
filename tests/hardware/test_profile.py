"""Device profiles: built-ins load, and every schema violation names its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smpq_onnx.errors import ProfileError
from smpq_onnx.hardware.profile import builtin_profile_names, load_profile
from smpq_onnx.quant.options import FP32, Option


def test_builtin_profiles() -> None:
    assert builtin_profile_names() == ["flexible", "mcu", "npu"]
    mcu, npu, flexible = (load_profile(n) for n in ("mcu", "npu", "flexible"))
    assert [str(o) for o in mcu.options] == ["W4A8", "W8A8", "W8A16"]
    assert {str(o) for o in npu.options} == {"W8A8", "W4A8", "W8A16", "W4A16"}
    assert len(flexible.quantized_options) == 49 and flexible.options[-1] == FP32
    assert mcu.memory.flash_bytes == 2 * 2**20 and mcu.memory.sram_bytes == 512 * 2**10
    assert mcu.macs_per_second(Option(8, 8)) == pytest.approx(480e6)
    assert npu.macs_per_second(Option(8, 8)) is None


def test_builtin_numbers_cite_a_source() -> None:
    folder = Path(__file__).parents[2] / "hw_profiles"
    for name in ("mcu", "npu"):
        text = (folder / f"{name}.yaml").read_text()
        assert text.count("source:") >= 3, name


def write(tmp_path: Path, data: object) -> str:
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def base() -> dict:
    return yaml.safe_load((Path(__file__).parents[2] / "hw_profiles" / "mcu.yaml").read_text())


def test_profile_file_by_path(tmp_path: Path) -> None:
    data = base()
    data["name"] = "my-mcu"
    assert load_profile(write(tmp_path, data)).name == "my-mcu"


BAD = {
    "unknown_key": (lambda d: d.update(flash=1), "key 'flash': unknown key"),
    "nested_unknown_key": (lambda d: d["memory"].update(dram_bytes=5),
                           "key 'memory.dram_bytes': unknown key"),
    "wrong_type": (lambda d: d.update(weight_bits="8"), "key 'weight_bits'"),
    "string_number": (lambda d: d.update(weight_bits=["8"]), "key 'weight_bits.0'"),
    "empty_options": (lambda d: d.update(activation_bits=[]), "key 'activation_bits'.*at least 1"),
    "bad_bits": (lambda d: d.update(weight_bits=[1, 8]), "key 'weight_bits'.*not supported"),
    "pair_outside_bits": (lambda d: d.update(pairs=["W2A8"]), "pairs: W2A8 uses weight bits"),
    "unknown_op": (lambda d: d["ops"].update(shared_scale=["Concatenate"]),
                   "key 'ops.shared_scale'.*unknown ONNX op"),
    "missing_key": (lambda d: d.pop("weight_quantization"),
                    "key 'weight_quantization': required key is missing"),
    "schema_version": (lambda d: d.update(schema_version=2), "key 'schema_version'"),
    "negative_memory": (lambda d: d["memory"].update(sram_bytes=-1), "key 'memory.sram_bytes'"),
    "throughput_gap": (lambda d: d["throughput"]["macs_per_cycle"].pop("W4A8"),
                       "no rate for \\['W4A8'\\]"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_profiles_name_the_key(tmp_path: Path, case: str) -> None:
    data = base()
    mutate, message = BAD[case]
    mutate(data)
    with pytest.raises(ProfileError, match=message):
        load_profile(write(tmp_path, data))


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="invalid YAML at line 3"):
        load_profile(write(tmp_path, "name: x\nweight_bits: [8, \n  - bad: ]"))


def test_unknown_name_lists_the_builtins() -> None:
    with pytest.raises(ProfileError, match="unknown device profile 'tpu'.*flexible, mcu, npu"):
        load_profile("tpu")


def test_missing_profile_file() -> None:
    with pytest.raises(ProfileError, match="profile file not found"):
        load_profile("/nonexistent/dev.yaml")
