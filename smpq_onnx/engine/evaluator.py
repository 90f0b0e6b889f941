"""Policy evaluation on ONNX Runtime: policy -> metric on one fixed evaluation set.

The model is cut into segments at single-tensor boundaries (:mod:`smpq_onnx.engine.segments`). Per
segment and configuration of its layers, the evaluation graph (activation fake-quant chains,
and fake-quantized weights cached per (layer, bits) as ready TensorProtos) is built on the
protobuf and one session created (kept in a small LRU). A policy runs from the first segment
whose prefix of configurations has no cached boundary activations: searches evaluate policies
that differ in a layer or two, so most evaluations skip part of the network. Results are
memoized on the policy, which is the whole realized configuration (calibration is fixed for
the evaluator's life). The FP32 outputs are computed once, on the whole model, and serve the
fidelity metrics.

This fast engine simulates quantization in float. At ORT's full optimization the deployable QDQ
model runs differently (integer QLinearConv, other fusions), and low-bit rounding magnifies the
difference. :meth:`Evaluator.evaluate_deployed` therefore measures a policy the way it ships:
it emits the QDQ model (:mod:`smpq_onnx.export.emit`) and runs it as it is, in the same runtime
settings. Searches score their final candidates with it, so the metric they report is the
emitted file's.

Searches hand independent policies over in batches (:meth:`Evaluator.evaluate_many`); with an
:attr:`Evaluator.executor` (:mod:`smpq_onnx.engine.executors`) they run on worker processes or
Ray actors built from :meth:`Evaluator.worker_spec`, and this evaluator records their results.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import numpy_helper

from smpq_onnx.engine.dataset import Dataset
from smpq_onnx.engine.evalstore import DEPLOYED, EvaluationStore
from smpq_onnx.engine.executors import Executor, WorkerSpec
from smpq_onnx.engine.fakequant import build_eval_model
from smpq_onnx.engine.metrics import TOKEN_METRICS, Metric, find_token_mask, kept_rows
from smpq_onnx.engine.prefix_cache import BoundaryCache, SessionCache
from smpq_onnx.engine.segments import SegmentPlan, plan_segments, segment_model
from smpq_onnx.errors import UnsupportedModelError
from smpq_onnx.export.emit import emit_qdq_model
from smpq_onnx.model.importer import ImportedModel
from smpq_onnx.model.layers import QuantizableLayer
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.model.shapes import batch_symbol, value_dims
from smpq_onnx.quant.calibration import Calibration
from smpq_onnx.quant.options import FLOAT_BITS, Mixture, Option, Shares, shares_of
from smpq_onnx.quant.policy import Policy

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64  # measured: smaller batches keep the fake-quant passes in cache
BATCH_ACTIVATION_BYTES = 40 << 20
"""Bound on a batch's widest activation. MobileNetV2 at 224 x 224 (4.8 MB a sample at its
widest) then runs 8 samples at a time: measured on 128 crops, 1.79 s an evaluation and 1.65 GB
peak, against 3.21 s and 4.2 GB at 64 (README "Executors")."""
DEFAULT_PREFIX_CACHE_BYTES = 512 << 20
DEFAULT_SESSION_CACHE = 16
DEFAULT_MAX_SEGMENTS = 8
ENGINE_VERSION = "segmented-2: CPU batches side by side on single-thread sessions"
"""Part of the resume key: a change of kernels or threading may move low-bit results."""


@dataclass(frozen=True)
class EvalResult:
    score: float
    n_samples: int
    seconds: float
    cached: bool = False


class Evaluator:
    def __init__(self, model: ImportedModel, calibration: Calibration, data: Dataset,
                 metric: Metric, *, runtime: RuntimeConfig | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
                 session_cache: int = DEFAULT_SESSION_CACHE,
                 max_segments: int = DEFAULT_MAX_SEGMENTS, profile_name: str = "custom",
                 reference: np.ndarray | None = None) -> None:
        self.model = model
        self.profile_name = profile_name
        """Written into deployed models' metadata (it does not change their numerics)."""
        self.calibration = calibration
        self.data = data
        self.metric = metric
        self.runtime = runtime or RuntimeConfig()
        self.batch_size = run_batch_size(model, batch_size)
        self._pad = model.fixed_batch is not None
        """A fixed batch takes no other size: a short last batch is padded, its extra
        outputs dropped."""
        graph = model.ir_model.graph
        symbol = batch_symbol({v.name or "": value_dims(v) for v in graph.inputs})
        output_dims = value_dims(graph.outputs[0])
        self._output_symbol_axis = (output_dims.index(symbol)
                                    if symbol is not None and symbol in output_dims else None)
        self._output_axis: int | None = None
        """The axis of the first output that holds the samples (found on the first run)."""
        self._base = ir.to_proto(model.ir_model)
        self._base_bytes = self._base.SerializeToString()
        # The base graph without the layers' weights and biases; each policy adds its own.
        self._distinct_weight_layers = list({layer.weight: layer
                                             for layer in model.layers}.values())
        self._biased_layers = [layer for layer in model.layers if model.owns_bias(layer)]
        replaced = {layer.weight for layer in model.layers} | {
            layer.bias for layer in self._biased_layers if layer.bias is not None}
        self._original_constants = {init.name: numpy_helper.to_array(init)
                                    for init in self._base.graph.initializer
                                    if init.name in replaced}
        self._skeleton = onnx.ModelProto()
        self._skeleton.CopyFrom(self._base)
        kept = [init for init in self._base.graph.initializer if init.name not in replaced]
        del self._skeleton.graph.initializer[:]
        self._skeleton.graph.initializer.extend(kept)
        self.plan: SegmentPlan = plan_segments(
            self._skeleton, model.layers, model.shapes, n_samples=len(data),
            max_boundary_bytes=prefix_cache_bytes // 4, max_segments=max_segments)
        self._segment_skeletons = [segment_model(self.plan, seg, self._skeleton,
                                                 self._skeleton.graph.initializer)
                                   for seg in self.plan.segments]
        owner = {layer.weight: layer for layer in self._distinct_weight_layers}
        # The layers whose options a segment's graph depends on (a shared weight follows the
        # layer that owns it in eval_model, wherever that layer sits).
        self._segment_deps = [
            tuple(dict.fromkeys([*(la.name for la in seg.layers),
                                 *(owner[la.weight].name for la in seg.layers)]))
            for seg in self.plan.segments]
        self.boundaries = BoundaryCache(prefix_cache_bytes)
        self.sessions: SessionCache[ort.InferenceSession] = SessionCache(session_cache)
        self._workers = self.runtime.batch_workers()
        self._pool = ThreadPoolExecutor(self._workers) if self._workers > 1 else None
        self._weights: dict[tuple[str, Shares], onnx.TensorProto] = {}
        self._biases: dict[tuple[str, int, int], onnx.TensorProto] = {}
        self._results: dict[Policy, EvalResult] = {}
        self._deployed: dict[tuple[Policy, bool], EvalResult] = {}
        self.n_evaluations = 0
        self.n_deployed = 0
        self.n_resumed = 0
        self.store: EvaluationStore | None = None
        self.executor: Executor | None = None
        """Where :meth:`evaluate_many` runs its batches (None: here, one after another)."""
        self.on_evaluation: Callable[[int], None] | None = None
        """Called with :attr:`n_evaluations` after each new evaluation, from any executor."""
        self._prefix_cache_bytes = prefix_cache_bytes
        self.reference = (self._run(self.runtime.session(self._base_bytes))
                          if reference is None else reference)
        """The FP32 model's first output on the evaluation set (given: a worker's copy)."""
        self.token_mask = self._find_token_mask()
        self.fp32_score = self.score_outputs(self.reference)

    def evaluate(self, policy: Policy) -> EvalResult:
        """The metric of ``policy`` on the evaluation set (memoized)."""
        known = self._results.get(policy)
        if known is not None:
            return EvalResult(known.score, known.n_samples, 0.0, cached=True)
        stored = self.store.get(policy) if self.store is not None else None
        if stored is not None:
            self.n_resumed += 1
            result = EvalResult(stored, len(self.data), 0.0, cached=True)
            self._results[policy] = result
            return result
        start = time.perf_counter()
        outputs = self.outputs(policy)
        return self._record(policy, self.score_outputs(outputs), time.perf_counter() - start)

    def _known(self, policy: Policy) -> bool:
        """Whether ``policy``'s score is memoized or stored (a stored one is memoized now)."""
        if policy in self._results:
            return True
        stored = self.store.get(policy) if self.store is not None else None
        if stored is None:
            return False
        self.n_resumed += 1
        self._results[policy] = EvalResult(stored, len(self.data), 0.0, cached=True)
        return True

    def _record(self, policy: Policy, score: float, seconds: float) -> EvalResult:
        result = EvalResult(score, len(self.data), seconds)
        self._results[policy] = result
        self.n_evaluations += 1
        if self.store is not None:
            self.store.put(policy, score)
        if self.on_evaluation is not None:
            self.on_evaluation(self.n_evaluations)
        return result

    def worker_spec(self) -> WorkerSpec:
        """What an executor's workers need to evaluate exactly as this evaluator does."""
        return WorkerSpec(self.model, self.calibration, self.data, self.metric, self.runtime,
                          self.batch_size, self.profile_name, self.reference,
                          self._prefix_cache_bytes)

    def forget(self) -> None:
        """Drop memoized results (not the store or the caches of boundaries and sessions), so
        that a benchmark counts each method's own evaluations."""
        self._results.clear()
        self._deployed.clear()

    def deployed_model(self, policy: Policy, *, native_int4: bool = False) -> onnx.ModelProto:
        """The deployable QDQ model of ``policy``, as ``apply`` and ``search`` write it."""
        return emit_qdq_model(self.model, policy, self.calibration, profile=self.profile_name,
                              native_int4=native_int4)

    def evaluate_deployed(self, policy: Policy, *, native_int4: bool = False) -> EvalResult:
        """The metric of ``policy``'s emitted QDQ model, run as it is (memoized, persisted)."""
        known = self._deployed.get((policy, native_int4))
        if known is not None:
            return EvalResult(known.score, known.n_samples, 0.0, cached=True)
        engine = DEPLOYED + ("-int4" if native_int4 else "")
        stored = self.store.get(policy, engine=engine) if self.store is not None else None
        if stored is not None:
            result = EvalResult(stored, len(self.data), 0.0, cached=True)
        else:
            start = time.perf_counter()
            model = self.deployed_model(policy, native_int4=native_int4)
            score = self.score_outputs(self.run_model(model.SerializeToString()))
            result = EvalResult(score, len(self.data), time.perf_counter() - start)
            self.n_deployed += 1
            if self.store is not None:
                self.store.put(policy, score, engine=engine)
        self._deployed[(policy, native_int4)] = result
        return result

    def run_model(self, model: bytes) -> np.ndarray:
        """First output of a whole model (same inputs) on the evaluation set, in a new session."""
        return self._run(self.runtime.session(model))

    def paired_win_rate(self, challenger: np.ndarray, incumbent: np.ndarray, *,
                        resamples: int = 400, seed: int = 0) -> float | None:
        """How often ``challenger``'s outputs score above ``incumbent``'s on bootstrap
        resamples of the evaluation samples, the same samples for both (ties count half): a
        paired comparison, so the noise both share cancels. None where a metric's rows are
        not samples (token masks)."""
        if self.token_mask is not None:
            return None
        rng = np.random.default_rng(seed)
        n, labels = len(self.reference), self.data.labels
        wins = 0.0
        for _ in range(resamples):
            rows = rng.integers(0, n, n)
            picked = None if labels is None else labels[rows]
            a = self.metric(challenger[rows], self.reference[rows], picked)
            b = self.metric(incumbent[rows], self.reference[rows], picked)
            wins += 1.0 if a > b else 0.5 if a == b else 0.0
        return wins / resamples

    def score_outputs(self, outputs: np.ndarray) -> float:
        if self.token_mask is not None:
            mask = self.token_mask[1]
            return self.metric(kept_rows(outputs, mask), kept_rows(self.reference, mask), None)
        return self.metric(outputs, self.reference, self.data.labels)

    def _find_token_mask(self) -> tuple[str, np.ndarray] | None:
        if self.metric.name not in TOKEN_METRICS:
            return None
        batched = [name for name in self.data.inputs if self.data.axis(name) is not None]
        found = find_token_mask(self.data.inputs, batched, self.reference.shape[1:])
        if found is not None:
            logger.info("%s over the %d token positions that input '%s' keeps (of %d)",
                        self.metric.name, int(found[1].sum()), found[0], found[1].size)
        return found

    @property
    def history(self) -> dict[Policy, EvalResult]:
        """Every policy evaluated so far (resumed ones included)."""
        return dict(self._results)

    def evaluate_many(self, policies: Iterable[Policy],
                      progress: Callable[[int], None] | None = None) -> list[EvalResult]:
        """The results of a batch of independent policies, in the batch's order.

        Policies not yet known run on :attr:`executor` (here when there is none), each result
        recorded as it arrives; ``progress(done)`` counts the batch's policies finished. They
        run in :meth:`prefix_order`, so that policies sharing leading segments follow each
        other and reuse the cached boundaries (a result does not depend on the order).
        """
        batch = list(policies)
        first = [self._results.get(p) for p in batch]  # memo hits report as cached
        missing = sorted(dict.fromkeys(p for p in batch if not self._known(p)),
                         key=self.prefix_order)
        multiplicity = Counter(batch)
        done = len(batch) - sum(multiplicity[p] for p in missing)
        if progress is not None and done:
            progress(done)
        if self.executor is None or len(missing) < 2:
            for policy in missing:
                self.evaluate(policy)
                done += multiplicity[policy]
                if progress is not None:
                    progress(done)
        else:
            for scored in self.executor.run(missing):
                policy = missing[scored.index]
                self._record(policy, scored.score, scored.seconds)
                done += multiplicity[policy]
                if progress is not None:
                    progress(done)
        return [EvalResult(known.score, known.n_samples, 0.0, cached=True)
                if known is not None else self._results[policy]
                for policy, known in zip(batch, first, strict=True)]

    def prefix_order(self, policy: Policy) -> tuple[tuple[str, ...], ...]:
        """Sort key: ``policy``'s configuration segment by segment, in network order."""
        return tuple(tuple(str(policy[name]) for name in deps) for deps in self._segment_deps)

    def scores(self, policies: Iterable[Policy]) -> list[float]:
        """:meth:`evaluate_many`'s scores."""
        return [result.score for result in self.evaluate_many(policies)]

    def outputs(self, policy: Policy) -> np.ndarray:
        """The model's first output for every evaluation sample under ``policy``.

        Starts at the first segment whose prefix of configurations has no cached boundary.
        """
        configs = [tuple(policy[name] for name in deps) for deps in self._segment_deps]
        last = len(self.plan) - 1
        start, carried = 0, None
        for k in range(last - 1, -1, -1):
            carried = self.boundaries.get((k, tuple(configs[:k + 1])))
            if carried is not None:
                start = k + 1
                for shallower in range(k - 1, -1, -1):
                    self.boundaries.touch((shallower, tuple(configs[:shallower + 1])))
                break
        feeds: list[dict[str, np.ndarray]]
        if carried is None:
            feeds = list(self.data.batches(self.batch_size, pad=self._pad))
        else:
            feeds = [{self.plan.segments[start].inputs[0]: a} for a in carried]
        chain = [(self.sessions.get((k, configs[k]), partial(self._segment_session, k, policy)),
                  self.plan.segments[k].output) for k in range(start, last + 1)]

        def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            """One batch through every remaining segment (it stays in cache on one core)."""
            outputs = []
            for session, output in chain:
                outputs.append(session.run([output], feed)[0])
                feed = {output: outputs[-1]}
            return outputs

        if self._pool is None or len(feeds) == 1:
            per_batch = [run(feed) for feed in feeds]
        else:
            per_batch = list(self._pool.map(run, feeds))
        for k in range(start, last):
            self.boundaries.put((k, tuple(configs[:k + 1])),
                                [outputs[k - start] for outputs in per_batch])
        return self._samples([outputs[-1] for outputs in per_batch])

    def _samples(self, parts: list[np.ndarray]) -> np.ndarray:
        """Per-batch outputs -> one array with the samples on axis 0 (padding dropped).

        An output's batch axis is the one whose size is the batch fed, preferring the axis of
        the inputs' batch symbol, then axis 0; it is decided on the first batch."""
        counts = self.data.batch_counts(self.batch_size)
        fed = [self.batch_size if self._pad else n for n in counts]
        if self._output_axis is None:
            shape = parts[0].shape
            matches = [axis for axis, size in enumerate(shape) if size == fed[0]]
            if not matches:
                name = self.model.ir_model.graph.outputs[0].name
                raise UnsupportedModelError(
                    f"the model's first output '{name}' has shape {shape}, with no axis of the "
                    f"batch size {fed[0]}; smpq-onnx needs an output with one entry per sample")
            preferred = [a for a in (self._output_symbol_axis, 0) if a in matches]
            self._output_axis = preferred[0] if preferred else matches[0]
        axis = self._output_axis
        return np.concatenate([np.moveaxis(part, axis, 0)[:n]
                               for part, n in zip(parts, counts, strict=True)])

    def _segment_session(self, k: int, policy: Policy) -> ort.InferenceSession:
        single = 1 if self._pool is not None else None
        return self.runtime.session(self.segment_eval_model(k, policy), arena=False,
                                    threads=single)

    def segment_eval_model(self, k: int, policy: Policy) -> onnx.ModelProto:
        """Segment ``k`` of :meth:`eval_model`, standalone."""
        segment = self.plan.segments[k]
        model = build_eval_model(self._segment_skeletons[k], segment.layers, policy,
                                 self.calibration.activation)
        weights = {layer.weight for layer in segment.layers}
        model.graph.initializer.extend(self._weight_tensor(layer, policy[layer.name])
                                       for layer in self._distinct_weight_layers
                                       if layer.weight in weights)
        inside = {layer.name for layer in segment.layers}
        model.graph.initializer.extend(self._bias_tensor(layer, policy[layer.name])
                                       for layer in self._biased_layers if layer.name in inside)
        return model

    def eval_model(self, policy: Policy) -> onnx.ModelProto:
        """The FP32 graph with activation fake-quant chains and fake-quantized weights.

        Weights are written into the model rather than overridden with
        ``SessionOptions.add_initializer``: at ORT_ENABLE_ALL the NCHWc transformer reorders
        the graph's own weight data and ignores the override (measured here).
        """
        model = build_eval_model(self._skeleton, self.model.layers, policy,
                                 self.calibration.activation)
        model.graph.initializer.extend(self._weight_tensor(layer, policy[layer.name])
                                       for layer in self._distinct_weight_layers)
        model.graph.initializer.extend(self._bias_tensor(layer, policy[layer.name])
                                       for layer in self._biased_layers)
        return model

    def _bias_tensor(self, layer: QuantizableLayer, option: Option) -> onnx.TensorProto:
        """int32-quantized bias when the layer's input and weight are both quantized (at one
        width each; a mixture keeps the float bias)."""
        assert layer.bias is not None
        quantized = (option.w_bits != FLOAT_BITS and option.a_bits != FLOAT_BITS
                     and not isinstance(option, Mixture))
        key = (layer.name, option.w_bits, option.a_bits) if quantized else (layer.name, 0, 0)
        if key not in self._biases:
            deployed = (self.calibration.bias(layer, option.w_bits, option.a_bits)
                        if quantized else None)
            array = self._original_constants[layer.bias] if deployed is None else deployed
            self._biases[key] = numpy_helper.from_array(array, layer.bias)
        return self._biases[key]

    def _weight_tensor(self, layer: QuantizableLayer, option: Option) -> onnx.TensorProto:
        """The fake-quantized weight; for a mixture, sum_b p_b Q_b(W)."""
        shares = shares_of(option, "w")
        key = (layer.weight, shares)
        if key not in self._weights:
            if len(shares) == 1:
                array = self._weight_array(layer, shares[0][0])
            else:
                array = np.asarray(np.sum([share * self._weight_array(layer, bits)
                                           for bits, share in shares], axis=0), np.float32)
            self._weights[key] = numpy_helper.from_array(array, layer.weight)
        return self._weights[key]

    def _weight_array(self, layer: QuantizableLayer, bits: int) -> np.ndarray:
        return (self._original_constants[layer.weight] if bits == FLOAT_BITS
                else self.calibration.weight(layer, bits))

    def session(self, policy: Policy) -> ort.InferenceSession:
        return self.runtime.session(self.eval_model(policy))

    def _run(self, session: ort.InferenceSession) -> np.ndarray:
        """The first output over the data; float16 inputs (an emitted float16 model's) are fed
        float16, and outputs read as float32."""
        output = session.get_outputs()[0].name
        halves = {i.name for i in session.get_inputs() if i.type == "tensor(float16)"}
        parts = []
        for batch in self.data.batches(self.batch_size, pad=self._pad):
            if halves:
                batch = {k: v.astype(np.float16) if k in halves else v for k, v in batch.items()}
            out = session.run([output], batch)[0]
            parts.append(out.astype(np.float32) if out.dtype == np.float16 else out)
        return self._samples(parts)


def run_batch_size(model: ImportedModel, requested: int) -> int:
    """Samples per run: the model's fixed batch if it has one (e.g. 1 for inputs
    ``[1, 3, 224, 224]``: ONNX Runtime refuses any other), else ``requested``, lowered so
    that the widest activation of a batch stays within ``BATCH_ACTIVATION_BYTES``."""
    if model.fixed_batch is not None:
        return model.fixed_batch
    widest = model.widest_activation * 4
    return max(1, min(requested, BATCH_ACTIVATION_BYTES // widest)) if widest else requested
