"""``auto`` calibration measures the 8-bit range per model: the percentile (less rounding noise)
where clipped outliers do not matter downstream, the MSE range where they carry the output."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_model
from onnx import TensorProto, helper

from smpq_onnx.engine.activation_ranges import choose_high_bits_method
from smpq_onnx.engine.dataset import Dataset
from smpq_onnx.model.importer import import_model
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.calibration import CalibrationSettings, collect_histograms

CHANNELS = 32


def _projection(*, clip_after: bool) -> tuple[object, Dataset]:
    """x [N, 16, 32] -> MatMul(W) (-> Clip(-1, 1)): W reads channel 0 strongly. The data has
    two values of 50 in channel 0 (under 0.01 % of all values: the percentile clips them)."""
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(CHANNELS, 8)) * 0.05).astype(np.float32)
    w[0] = 1.0
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm" if clip_after else "y"], name="proj")]
    inits = {"w": w}
    if clip_after:
        inits |= {"lo": np.array(-1.0, np.float32), "hi": np.array(1.0, np.float32)}
        nodes.append(helper.make_node("Clip", ["mm", "lo", "hi"], ["y"], name="clip"))
    model = import_model(make_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, CHANNELS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 8])], inits))
    x = rng.normal(size=(64, 16, CHANNELS)).astype(np.float32) * 0.5
    x[[3, 40], [2, 0], 0] = 50.0
    return model, Dataset({"x": x}, None, "test")


@pytest.mark.parametrize(("clip_after", "expected"), [(False, "mse"), (True, "percentile")])
def test_the_range_whose_a8_model_is_closer_to_fp32_is_kept(clip_after: bool,
                                                            expected: str) -> None:
    model, data = _projection(clip_after=clip_after)
    runtime = RuntimeConfig(provider="cpu")
    histograms = collect_histograms(model, data.batches(32), ["x"], runtime=runtime)
    chosen, scores = choose_high_bits_method(model, histograms, CalibrationSettings(), data,
                                             layers=["proj"], runtime=runtime, batch_size=32)
    assert chosen == expected
    other = "percentile" if expected == "mse" else "mse"
    assert scores[expected] > scores[other] + 3.0  # dB: a clear decision, not a tie
