"""The deployed engine: a policy scored by running its emitted QDQ model as it ships."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from test_segments import make_evaluator, policy

from smpq_onnx.engine.evalstore import EvaluationStore
from smpq_onnx.engine.metrics import BUILTIN_METRICS
from smpq_onnx.export.emit import save_model_atomic
from smpq_onnx.quant.options import FP32, Option

MIXED = policy([Option(4, 8), Option(3, 3), Option(8, 8), Option(2, 4), FP32])


@pytest.mark.parametrize("optimization", ["basic", "all"])
def test_deployed_score_is_the_written_file_in_a_fresh_session(tmp_path: Path,
                                                               optimization: str) -> None:
    evaluator = make_evaluator(optimization)
    path = tmp_path / "model.qdq.onnx"
    save_model_atomic(evaluator.deployed_model(MIXED), path)
    onnx.checker.check_model(str(path))
    options = ort.SessionOptions()  # a user's session: defaults but the level
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = np.concatenate([session.run(None, batch)[0]
                              for batch in evaluator.data.batches(evaluator.batch_size)])
    fresh = BUILTIN_METRICS["sqnr"](outputs, evaluator.reference, None)
    assert evaluator.evaluate_deployed(MIXED).score == pytest.approx(fresh, rel=1e-6)
    # The fake-quant engine simulates the same quantizers: close, not required to be equal.
    assert evaluator.evaluate(MIXED).score == pytest.approx(fresh, abs=1.0)


def test_deployed_scores_are_memoized_and_persisted_apart_from_fast_ones(tmp_path: Path) -> None:
    store_path = tmp_path / "evaluations.jsonl"
    first = make_evaluator()
    first.store = EvaluationStore(store_path)
    fast, deployed = first.evaluate(MIXED).score, first.evaluate_deployed(MIXED).score
    assert first.evaluate_deployed(MIXED).cached and first.n_deployed == 1
    first.store.close()
    assert len(store_path.read_text().splitlines()) == 2

    second = make_evaluator()
    second.store = EvaluationStore(store_path)
    assert second.evaluate_deployed(MIXED).score == deployed
    assert second.evaluate(MIXED).score == fast
    assert second.n_deployed == 0 and second.n_evaluations == 0
    second.store.close()
