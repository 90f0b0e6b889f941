"""Small models built in the tests (onnx.helper), shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
               outputs: list[onnx.ValueInfoProto], initializers: dict[str, np.ndarray],
               *, opset: int = 17, ir_version: int | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "test", inputs, outputs,
        [numpy_helper.from_array(a.astype(a.dtype), name) for name, a in initializers.items()],
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = ir_version or max(helper.find_min_ir_version_for(opsets), 7)
    return model


def conv_chain(*, opset: int = 17, batch: str | int = "N", seed: int = 0) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv(3->4, 3x3, pad 1) -> Relu -> Conv(4->6, 1x1) -> Flatten -> Gemm(->5)."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(size=(4,)).astype(np.float32),
        "w2": rng.normal(size=(6, 4, 1, 1)).astype(np.float32),
        "w3": rng.normal(size=(384, 5)).astype(np.float32),
        "b3": rng.normal(size=(5,)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Flatten", ["c2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])],
        inits, opset=opset,
    )


@pytest.fixture
def conv_chain_path(tmp_path: Path) -> Path:
    path = tmp_path / "chain.onnx"
    onnx.save(conv_chain(), str(path))
    return path


def conv_chain_files(folder: Path, *, samples: int = 48, seed: int = 0) -> tuple[Path, Path]:
    """``conv_chain()`` saved in ``folder`` with ``samples`` random 3x8x8 inputs beside it."""
    model, data = folder / "chain.onnx", folder / "data.npz"
    onnx.save(conv_chain(), str(model))
    x = np.random.default_rng(seed).normal(size=(samples, 3, 8, 8)).astype(np.float32)
    np.savez(data, x=x)
    return model, data


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def old_opset_cnn(opset: int, *, seed: int = 0) -> onnx.ModelProto:
    """An opset 7..10 model as old exporters wrote them (IR 3 lists initializers as inputs).

    x[N,3,16,16] -> Conv(3->4) -> BatchNormalization -> Relu -> MaxPool(2) -> Upsample(x2)
    (Resize at opset 10) -> Concat with the Relu -> Conv(8->4, 1x1) -> Dropout -> Flatten ->
    Reshape -> Gemm(->5) -> Softmax.
    """
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(size=(4,)).astype(np.float32),
        "bn_scale": rng.uniform(0.5, 1.5, size=(4,)).astype(np.float32),
        "bn_bias": rng.normal(size=(4,)).astype(np.float32),
        "bn_mean": rng.normal(scale=0.1, size=(4,)).astype(np.float32),
        "bn_var": rng.uniform(0.5, 1.5, size=(4,)).astype(np.float32),
        "w2": rng.normal(size=(4, 8, 1, 1)).astype(np.float32),
        "shape": np.array([0, -1], np.int64),
        "w3": rng.normal(scale=0.1, size=(5, 4 * 16 * 16)).astype(np.float32),
        "b3": rng.normal(size=(5,)).astype(np.float32),
    }
    if opset >= 9:
        inits["scales"] = np.array([1, 1, 2, 2], np.float32)
    upsample = (helper.make_node("Upsample", ["p1"], ["u1"], name="up", mode="nearest",
                                 scales=[1.0, 1.0, 2.0, 2.0]) if opset < 9 else
                helper.make_node("Upsample" if opset == 9 else "Resize", ["p1", "scales"],
                                 ["u1"], name="up", mode="nearest"))
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean",
                                                "bn_var"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        upsample,
        helper.make_node("Concat", ["u1", "r1"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "w2"], ["c2"], name="conv2"),
        helper.make_node("Dropout", ["c2"], ["d2"], name="drop"),
        helper.make_node("Flatten", ["d2"], ["f"], name="flat"),
        helper.make_node("Reshape", ["f", "shape"], ["f2"], name="reshape"),
        helper.make_node("Gemm", ["f2", "w3", "b3"], ["g"], name="fc", transB=1),
        helper.make_node("Softmax", ["g"], ["y"], name="softmax"),
    ]
    opsets = [helper.make_opsetid("", opset)]
    ir_version = helper.find_min_ir_version_for(opsets)
    weights = [numpy_helper.from_array(a, name) for name, a in inits.items()]
    listed = [helper.make_tensor_value_info(t.name, t.data_type, t.dims)
              for t in weights] if ir_version < 4 else []
    graph = helper.make_graph(
        nodes, f"opset{opset}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16]), *listed],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], weights)
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = ir_version
    return model


def dynamic_cnn(*, batch: str | int = "N", height: str | int = "H", width: str | int = "W",
                seed: int = 0) -> onnx.ModelProto:
    """x[batch,3,height,width] -> Conv(3->4, 3x3, pad 1) -> Relu -> Conv(4->6, 1x1) ->
    GlobalAveragePool -> Flatten -> Gemm(->5): any image size runs."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(size=(4,)).astype(np.float32),
        "w2": rng.normal(size=(6, 4, 1, 1)).astype(np.float32),
        "w3": rng.normal(size=(6, 5)).astype(np.float32),
        "b3": rng.normal(size=(5,)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, height, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])],
        inits)


def tiny_encoder(*, layers: int = 2, hidden: int = 16, heads: int = 2, ffn: int = 32,
                 vocab: int = 40, seed: int = 0) -> onnx.ModelProto:
    """A BERT-style encoder: input_ids, attention_mask [batch, seq] (both symbolic) -> token
    states [batch, seq, hidden]. Embedding Gather + LayerNorm; per layer, Q/K/V/output
    projections (MatMul + Add), attention MatMuls between activations with the mask as an
    additive bias, Softmax, residual LayerNorms and an erf-GELU FFN. Hidden channel 3 of the
    embeddings carries outliers (x40) on token id 1, as trained transformers do."""
    rng = np.random.default_rng(seed)
    head = hidden // heads
    table = rng.normal(size=(vocab, hidden)).astype(np.float32)
    table[1, 3] *= 40.0
    inits: dict[str, np.ndarray] = {
        "emb": table, "ln_g": np.ones(hidden, np.float32), "ln_b": np.zeros(hidden, np.float32),
        "heads_shape": np.array([0, 0, heads, head], np.int64),
        "merge_shape": np.array([0, 0, hidden], np.int64),
        "scale": np.array(1.0 / np.sqrt(head), np.float32),
        "one": np.array(1.0, np.float32), "neg": np.array(-1e4, np.float32),
        "half": np.array(0.5, np.float32), "sqrt2": np.array(np.sqrt(2.0), np.float32),
    }

    def dense(name: str, x: str, d_in: int, d_out: int, nodes: list[onnx.NodeProto]) -> str:
        inits[f"{name}.w"] = (rng.normal(size=(d_in, d_out)) / np.sqrt(d_in)).astype(np.float32)
        inits[f"{name}.b"] = (rng.normal(size=(d_out,)) * 0.1).astype(np.float32)
        nodes += [helper.make_node("MatMul", [x, f"{name}.w"], [f"{name}.mm"], name=f"{name}"),
                  helper.make_node("Add", [f"{name}.mm", f"{name}.b"], [f"{name}.out"],
                                   name=f"{name}.add")]
        return f"{name}.out"

    def norm(name: str, x: str, nodes: list[onnx.NodeProto]) -> str:
        nodes.append(helper.make_node("LayerNormalization", [x, "ln_g", "ln_b"], [name],
                                      name=name, axis=-1, epsilon=1e-5))
        return name

    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["embedded"], name="embedding"),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], name="mask_cast", to=1),
        helper.make_node("Sub", ["one", "mask_f"], ["mask_inv"], name="mask_inv"),
        helper.make_node("Mul", ["mask_inv", "neg"], ["mask_bias2"], name="mask_bias"),
        helper.make_node("Unsqueeze", ["mask_bias2", "mask_axes"], ["mask_bias4"],
                         name="mask_unsqueeze"),
    ]
    inits["mask_axes"] = np.array([1, 2], np.int64)
    h = norm("emb_ln", "embedded", nodes)
    for i in range(layers):
        p = f"layer{i}"
        q, k, v = (dense(f"{p}.{n}", h, hidden, hidden, nodes) for n in ("query", "key", "value"))
        nodes += [
            helper.make_node("Reshape", [q, "heads_shape"], [f"{p}.q4"], name=f"{p}.q_split"),
            helper.make_node("Transpose", [f"{p}.q4"], [f"{p}.qh"], name=f"{p}.q_t",
                             perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [k, "heads_shape"], [f"{p}.k4"], name=f"{p}.k_split"),
            helper.make_node("Transpose", [f"{p}.k4"], [f"{p}.kh"], name=f"{p}.k_t",
                             perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [v, "heads_shape"], [f"{p}.v4"], name=f"{p}.v_split"),
            helper.make_node("Transpose", [f"{p}.v4"], [f"{p}.vh"], name=f"{p}.v_t",
                             perm=[0, 2, 1, 3]),
            helper.make_node("MatMul", [f"{p}.qh", f"{p}.kh"], [f"{p}.scores"],
                             name=f"{p}.attention_scores"),
            helper.make_node("Mul", [f"{p}.scores", "scale"], [f"{p}.scaled"], name=f"{p}.scale"),
            helper.make_node("Add", [f"{p}.scaled", "mask_bias4"], [f"{p}.masked"],
                             name=f"{p}.mask"),
            helper.make_node("Softmax", [f"{p}.masked"], [f"{p}.probs"], name=f"{p}.softmax",
                             axis=-1),
            helper.make_node("MatMul", [f"{p}.probs", f"{p}.vh"], [f"{p}.ctx4"],
                             name=f"{p}.attention_context"),
            helper.make_node("Transpose", [f"{p}.ctx4"], [f"{p}.ctx_t"], name=f"{p}.ctx_t",
                             perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [f"{p}.ctx_t", "merge_shape"], [f"{p}.ctx"],
                             name=f"{p}.ctx_merge"),
        ]
        attended = dense(f"{p}.attention_output", f"{p}.ctx", hidden, hidden, nodes)
        nodes.append(helper.make_node("Add", [h, attended], [f"{p}.res1"], name=f"{p}.res1"))
        h = norm(f"{p}.ln1", f"{p}.res1", nodes)
        up = dense(f"{p}.intermediate", h, hidden, ffn, nodes)
        nodes += [
            helper.make_node("Div", [up, "sqrt2"], [f"{p}.gx"], name=f"{p}.gelu_div"),
            helper.make_node("Erf", [f"{p}.gx"], [f"{p}.ge"], name=f"{p}.gelu_erf"),
            helper.make_node("Add", [f"{p}.ge", "one"], [f"{p}.g1"], name=f"{p}.gelu_add"),
            helper.make_node("Mul", [up, f"{p}.g1"], [f"{p}.g2"], name=f"{p}.gelu_mul"),
            helper.make_node("Mul", [f"{p}.g2", "half"], [f"{p}.gelu"], name=f"{p}.gelu_half"),
        ]
        down = dense(f"{p}.output", f"{p}.gelu", ffn, hidden, nodes)
        nodes.append(helper.make_node("Add", [h, down], [f"{p}.res2"], name=f"{p}.res2"))
        h = norm(f"{p}.ln2", f"{p}.res2", nodes)
    nodes.append(helper.make_node("Identity", [h], ["token_states"], name="out"))
    return make_model(
        nodes,
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("token_states", TensorProto.FLOAT,
                                       ["batch", "seq", hidden])],
        inits, opset=17)


def encoder_data(n: int, *, seq: int = 12, vocab: int = 40, seed: int = 0
                 ) -> dict[str, np.ndarray]:
    """Token ids (1 first, as a [CLS]) and masks of varied lengths, padding with id 0."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, vocab, size=(n, seq)).astype(np.int64)
    ids[:, 0] = 1
    lengths = rng.integers(seq // 3, seq + 1, size=n)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": np.where(mask == 1, ids, 0), "attention_mask": mask}
