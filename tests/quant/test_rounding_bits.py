"""``eval``/``apply`` with ``--bits`` round only the weight bit-width that policy uses; a
policy (or a search) rounds every bit-width of the profile."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import conv_chain

import smpq_onnx


def _entries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "(layer, bits) entries" in r.getMessage()]


def test_one_bit_width_is_rounded_for_a_uniform_policy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SMPQ_CACHE_DIR", str(tmp_path / "cache"))
    model, data = tmp_path / "chain.onnx", tmp_path / "data.npz"
    onnx.save(conv_chain(), str(model))
    np.savez(data, x=np.random.default_rng(0).normal(size=(48, 3, 8, 8)).astype(np.float32))
    with caplog.at_level(logging.INFO, logger="smpq_onnx.quant.weight_rounding"):
        first = smpq_onnx.evaluate(model, data=data, bits="W4A8", provider="cpu")
        again = smpq_onnx.evaluate(model, data=data, bits="W4A8", provider="cpu")
        # The first run computed the table, the second read it: 3 layers x 1 width.
        (line,) = _entries(caplog)
        assert ": 3 (layer, bits) entries" in line
        assert again.quantized == first.quantized
        caplog.clear()
        for _ in range(2):
            whole = smpq_onnx.evaluate(model, data=data, policy={"conv1": "W4A8"},
                                       default_bits="W4A8", provider="cpu")
        (line,) = _entries(caplog)
        assert ": 21 (layer, bits) entries" in line  # 3 layers x 7 widths
    # The 4-bit codes are the same whichever table holds them.
    assert whole.quantized == first.quantized
