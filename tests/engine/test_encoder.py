"""Transformer encoders: constant-weight MatMuls are the layers; attention MatMuls, Softmax,
LayerNorm, GELU and the embedding Gather stay float; the default metric is token cosine over
the positions the attention mask keeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import encoder_data, tiny_encoder

import smpq_onnx
from smpq_onnx.engine.metrics import BUILTIN_METRICS, find_token_mask, kept_rows
from smpq_onnx.model.importer import import_model

PROJECTIONS = ("query", "key", "value", "attention_output", "intermediate", "output")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("encoder")
    model = folder / "encoder.onnx"
    onnx.save(tiny_encoder(), str(model))
    data = folder / "tokens.npz"
    np.savez(data, **encoder_data(96))
    return model, data


def test_the_layers_are_the_constant_weight_matmuls() -> None:
    model = import_model(tiny_encoder(), input_shapes={"input_ids": (1, 12),
                                                       "attention_mask": (1, 12)})
    assert [layer.name for layer in model.layers] == [
        f"layer{i}.{p}" for i in range(2) for p in PROJECTIONS]
    assert {layer.op_type for layer in model.layers} == {"MatMul"}
    # Q, K and V read one tensor: one activation quantizer for the three.
    first = {layer.name: layer.activation for layer in model.layers[:3]}
    assert len(set(first.values())) == 1


def test_only_layer_inputs_and_weights_are_quantized_in_the_emitted_model(
        encoder: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = encoder
    applied = smpq_onnx.apply(model, bits="W8A8", data=data, out=tmp_path / "q.onnx",
                              hw="flexible", provider="cpu")
    assert applied.check is not None and applied.check.match
    emitted = onnx.load(str(applied.out))
    dequantized = {o for n in emitted.graph.node if n.op_type == "DequantizeLinear"
                   for o in n.output}
    fed_quantized = {n.name for n in emitted.graph.node
                     if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                     and any(i in dequantized for i in n.input)}
    assert fed_quantized == {f"layer{i}.{p}" for i in range(2) for p in PROJECTIONS}
    kept_float = {"embedding", "emb_ln", "layer0.softmax", "layer0.attention_scores",
                  "layer0.attention_context", "layer1.ln2", "layer1.gelu_erf"}
    assert kept_float <= {n.name for n in emitted.graph.node}


def test_w8a8_keeps_the_token_states_with_default_settings(encoder: tuple[Path, Path]) -> None:
    model, data = encoder
    result = smpq_onnx.evaluate(model, data=data, bits="W8A8", hw="flexible", provider="cpu")
    assert result.metric == "cosine" and result.fp32 == pytest.approx(1.0)
    assert result.quantized >= 0.98 and result.deployed >= 0.98
    low = smpq_onnx.evaluate(model, data=data, bits="W2A8", hw="flexible", provider="cpu")
    assert low.quantized < result.quantized  # the metric sees quantization


def test_token_fidelity_ignores_padded_positions() -> None:
    tokens = encoder_data(8, seq=6)
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(8, 6, 4))
    outputs = reference + rng.normal(size=reference.shape) * 0.1
    found = find_token_mask({**tokens, "input_ids": tokens["input_ids"]},
                            ["input_ids", "attention_mask"], reference.shape[1:])
    assert found is not None and found[0] == "attention_mask"
    mask = found[1]
    assert mask.shape == (8, 6) and not mask.all()
    cosine = BUILTIN_METRICS["cosine"]
    score = cosine(kept_rows(outputs, mask), kept_rows(reference, mask), None)
    garbage = outputs.copy()
    garbage[~mask] = 1e3 * rng.normal(size=garbage[~mask].shape)
    assert cosine(kept_rows(garbage, mask), kept_rows(reference, mask), None) == score
    assert cosine(garbage, reference, None) < score  # unmasked scoring would see the padding
    # A mask that does not line up with the output, or an input of ids, is not a mask.
    assert find_token_mask(tokens, ["attention_mask"], (7, 4)) is None
    assert find_token_mask({"input_ids": tokens["input_ids"]}, ["input_ids"], (6, 4)) is None
