"""What ``compare.py``'s experiments share: sizes, progress, the results file, the arenas.

An arena is one model on one device profile: its game, costs, budgets and three evaluators
sharing one calibration (search split, held-out split, and for MobileNetV2 the labeled
sanity images). A method's result row records the held-out re-evaluation of its policy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from harness.data import ModelData
from smpq_onnx.api.context import DEFAULT_ROUNDING, round_calibration
from smpq_onnx.engine.evaluator import EvalResult, Evaluator
from smpq_onnx.engine.metrics import BUILTIN_METRICS, search_utility
from smpq_onnx.errors import BudgetInfeasibleError
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.hardware.profile import DeviceProfile, load_profile
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.calibration import Calibration, CalibrationSettings, collect_histograms
from smpq_onnx.quant.histogram import StreamingHistogram
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.policy import Policy
from smpq_onnx.quant.weight_rounding import RoundingSettings
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.smpq import cheapest_policy, infeasible_error
from smpq_onnx.strategy.space import SearchSpace

FLEXIBLE_BUDGETS = (("w4a8_bops", Option(4, 8)), ("w3a8_bops", Option(3, 8)),
                    ("w4a4_bops", Option(4, 4)), ("w3a4_bops", Option(3, 4)))
"""0.5, 0.375, 0.25 and 0.1875x the BOPs of uniform W8A8."""
W8A8_FRACTIONS = (("0.75_w8a8_bops", 0.75), ("0.6_w8a8_bops", 0.6))
"""Budgets of profiles without those options (npu), as fractions of uniform W8A8's BOPs."""
MCU_BUDGET = "mcu_memory"


@dataclass(frozen=True)
class ShapleyPlan:
    """Owen sampling size: ``samples`` (M) and ``rounds`` (K), or sized from ``max_evals``."""

    max_evals: int
    samples: int | None = None
    rounds: int | None = None


@dataclass(frozen=True)
class ModelPlan:
    """Sizes of one model's experiments."""

    search: int
    heldout: int
    calib: int
    shapley: ShapleyPlan
    """On the flexible profile (the mcu profile has its own)."""
    random_cap: int | None
    """At most this many random draws (None: as many as the Shapley run evaluated)."""
    amp_candidates: tuple[str, ...] | None
    """AMP's candidate options on the flexible profile besides the top one (None: all)."""
    dmpq_epochs: int | None
    """DmpqSettings.epochs (None: its default)."""
    dmpq_images: int | None
    """DMPQ trains alpha on the first this many calibration images (None: all)."""
    tau_min_bits: int
    """Iso-BOPs policies for tau use options with at least this many bits on each side."""
    pitfall_units: int | None
    """Units in the alpha-pitfall analysis, evenly spaced (None: all)."""


@dataclass(frozen=True)
class Config:
    quick: bool
    seeds: tuple[int, ...]
    models: dict[str, ModelPlan]
    mcu_shapley: ShapleyPlan
    tau_policies: int
    tau_window: float
    bootstrap: int
    skip: tuple[str, ...] = ()
    """``model:method`` pairs not run (the quick run skips MobileNetV2's slowest)."""
    shapley_evals: int | None = None
    """The default search's ``--max-evals`` (None: AMP's count on the arena)."""
    evolution_factor: int = 10
    """The reference gets this many times the default search's evaluations."""
    evolution_seeds: int = 1
    evolution_budgets: tuple[str, ...] = ("w3a4_bops",)
    """Budget keys the reference runs at (10x evaluations do not fit 90 minutes on 2 cores at
    every budget)."""

    def shapley_plan(self, model: str, profile: str) -> ShapleyPlan:
        return self.mcu_shapley if profile == "mcu" else self.models[model].shapley

    def amp_candidates(self, model: str, profile: str) -> set[Option] | None:
        texts = self.models[model].amp_candidates
        if profile != "flexible" or not texts:
            return None
        return {Option.parse(text) for text in texts}

    def skipped(self, model: str, method: str) -> bool:
        return f"{model}:{method}" in self.skip

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Clock:
    """Progress lines with the elapsed time since the start of the run."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def log(self, message: str) -> None:
        print(f"[{self.elapsed() / 60:6.1f} min] {message}", flush=True)


class Recorder:
    """compare.json, rewritten atomically after every change so a crash keeps finished parts."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self.save()

    def add(self, section: str, item: dict[str, Any]) -> None:
        self.data.setdefault(section, []).append(item)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=_json_default) + "\n")
        os.replace(tmp, self.path)


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


class CountingEvaluator:
    """A shared Evaluator seen by one method: counts the distinct policies the method asks for.

    Evaluations stay memoized across methods (the shared evaluator), so a method's count is
    what it would cost alone while the run pays for each policy once.
    """

    def __init__(self, inner: Evaluator, asked: Iterable[Policy] = (), *,
                 progress: Callable[[int], None] | None = None, every: int = 100) -> None:
        self.inner = inner
        self.asked: set[Policy] = set(asked)
        self.progress = progress
        self.every = every

    def _ask(self, policy: Policy) -> None:
        if policy not in self.asked:
            self.asked.add(policy)
            if self.progress is not None and len(self.asked) % self.every == 0:
                self.progress(len(self.asked))

    def evaluate(self, policy: Policy) -> EvalResult:
        self._ask(policy)
        return self.inner.evaluate(policy)

    def evaluate_many(self, policies: Iterable[Policy],
                      progress: Callable[[int], None] | None = None) -> list[EvalResult]:
        batch = list(policies)
        for policy in batch:
            self._ask(policy)
        return self.inner.evaluate_many(batch, progress)

    def scores(self, policies: Iterable[Policy]) -> list[float]:
        return [result.score for result in self.evaluate_many(policies)]

    def evaluate_deployed(self, policy: Policy) -> EvalResult:
        """Final candidates are scored as emitted models; each counts as one evaluation."""
        if policy not in self.asked:
            self.asked.add(policy)
        return self.inner.evaluate_deployed(policy)

    def fork(self) -> CountingEvaluator:
        """A counter that starts from what this one has seen (estimation, then selection)."""
        return CountingEvaluator(self.inner, self.asked)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def typed(self) -> Evaluator:
        return cast(Evaluator, self)


@dataclass(frozen=True)
class HeldoutScores:
    """An emitted model on the held-out split: the model's metric, the search's utility and
    per sample whether it is right (class metrics, else None)."""

    metric: float
    utility: float
    hits: np.ndarray | None


@dataclass
class Arena:
    """One model on one device profile: game, costs, evaluators, budgets, estimates."""

    data: ModelData
    profile: DeviceProfile
    space: SearchSpace
    game: QuantizationGame
    costs: CostModel
    search: Evaluator
    heldout: Evaluator
    sanity: Evaluator | None
    budgets: dict[str, Budget]
    labels: dict[str, str]
    infeasible: dict[str, str]
    """Budget key -> why no policy meets it."""
    phi: dict[int, np.ndarray] = field(default_factory=dict)
    dmpq_alpha: dict[int, np.ndarray] = field(default_factory=dict)
    context: list[np.ndarray] | None = None
    amp_drop: list[dict[Option, float]] | None = None
    amp_evaluations: int | None = None
    """AMP's evaluation count on this arena (the default search's count in the benchmark)."""
    local_values: dict[int, tuple[QuantizationGame, np.ndarray]] = field(default_factory=dict)
    """Per seed, the last window the default search played at the tau budget and its values."""
    heldout_hits: dict[tuple[str, str, int | None], np.ndarray] = field(default_factory=dict)
    """(budget, method, seed) -> which held-out samples the emitted model gets right (class
    metrics): the paired comparison of two methods on the same samples."""
    heldout_scored: dict[Policy, HeldoutScores] = field(default_factory=dict)
    """Per policy, its emitted model's held-out scores (methods often choose the same one)."""

    @property
    def key(self) -> str:
        return f"{self.data.key}/{self.profile.name}"

    def feasible(self) -> list[str]:
        return [k for k in self.budgets if k not in self.infeasible]


def data_histograms(data: ModelData, runtime: RuntimeConfig
                    ) -> dict[str, StreamingHistogram]:
    """Activation histograms of ``data``'s calibration split (batches of 64): one pass per
    model, shared by the arenas of every profile."""
    return collect_histograms(data.model, data.calib.batches(64),
                              [layer.activation for layer in data.model.layers],
                              runtime=runtime)


def make_arena(data: ModelData, profile_name: str, histograms: dict[str, StreamingHistogram],
               runtime: RuntimeConfig, rounding: RoundingSettings = DEFAULT_ROUNDING) -> Arena:
    """Calibration settings and weight rounding from the profile, as ``smpq-onnx search``
    builds them (the rounding table is computed once per model and read from the disk cache
    for the other profiles that share its bit-widths)."""
    profile = load_profile(profile_name)
    model = data.model
    settings = CalibrationSettings(
        activation_method="auto",
        symmetric_activations=profile.activation_quantization.symmetric,
        per_channel_weights=profile.weight_quantization.granularity == "per_channel",
        weight_rounding=rounding.label)
    calibration = Calibration(model, histograms, settings)
    round_calibration(calibration, SearchSpace.build(model, profile), data.calib,
                      rounding=rounding, runtime=runtime)
    # The search's utility is smpq-onnx search's (KL to FP32 for class metrics); held-out
    # scores keep the model's metric.
    search = Evaluator(model, calibration, data.search, search_utility(data.metric),
                       runtime=runtime)
    heldout = Evaluator(model, calibration, data.heldout, data.metric, runtime=runtime)
    sanity = None
    if data.sanity is not None:
        sanity = Evaluator(model, calibration, data.sanity, BUILTIN_METRICS["top1"],
                           runtime=runtime)
    space = SearchSpace.build(model, profile)
    game = QuantizationGame(space)
    costs = CostModel(model, profile)
    budgets: dict[str, Budget] = {}
    labels: dict[str, str] = {}
    if profile_name == "mcu":
        budgets[MCU_BUDGET] = Budget.from_profile(profile, model)
        labels[MCU_BUDGET] = "mcu flash + SRAM limits"
    else:
        if all(option in profile.options for _, option in FLEXIBLE_BUDGETS):
            for key, option in FLEXIBLE_BUDGETS:
                budgets[key] = Budget(bops=costs.cost(space.uniform(option)).bops)
                labels[key] = f"BOPs of uniform {option}"
        else:  # npu: W8A8 / W4A8 / W8A16 / W4A16 pairs
            w8a8 = costs.cost(space.uniform(Option(8, 8))).bops
            for key, fraction in W8A8_FRACTIONS:
                budgets[key] = Budget(bops=int(fraction * w8a8))
                labels[key] = f"{fraction} x BOPs of uniform W8A8"
    infeasible = {}
    cheapest = costs.cost(cheapest_policy(game))
    for key, budget in budgets.items():
        if not budget.fits(cheapest):
            infeasible[key] = str(infeasible_error(game, costs, budget))
    return Arena(data, profile, space, game, costs, search, heldout, sanity, budgets, labels,
                 infeasible)


def budget_json(budget: Budget) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(budget).items() if v is not None}


def add_result(rec: Recorder, clock: Clock, arena: Arena, budget_key: str, method: str,
               seed: int | None, policy: Policy, search_score: float, *, evaluations: int,
               estimation_s: float, selection_s: float,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score ``policy``'s emitted QDQ model (what ships) on the held-out (and sanity) split
    and record the row."""
    budget = arena.budgets[budget_key]
    costs = arena.costs.cost(policy)
    scored = arena.heldout_scored.get(policy)
    if scored is None:
        scored = arena.heldout_scored[policy] = heldout_scores(arena.heldout, policy)
    heldout = scored.metric
    if scored.hits is not None:
        arena.heldout_hits[(budget_key, method, seed)] = scored.hits
    sanity = (arena.sanity.evaluate_deployed(policy).score if arena.sanity is not None
              else None)
    row = {
        "model": arena.data.key, "profile": arena.profile.name, "budget": budget_key,
        "method": method, "seed": seed, "status": "ok",
        "search": search_score, "heldout": heldout, "sanity_top1": sanity,
        "heldout_utility": scored.utility,
        "bops": costs.bops, "weight_bytes": costs.weight_bytes,
        "peak_activation_bytes": costs.peak_activation_bytes,
        "fits": budget.fits(costs),
        "evaluations": evaluations, "estimation_s": estimation_s, "selection_s": selection_s,
        "wall_s": estimation_s + selection_s,
        "options_used": sorted({str(o) for o in policy.values()}),
        "policy": {name: str(option) for name, option in policy.items()},
        **(extra or {}),
    }
    rec.add("results", row)
    scale = 100.0 if arena.data.metric.percent else 1.0
    seed_text = "" if seed is None else f" seed {seed}"
    clock.log(f"  {arena.key} {budget_key} {method}{seed_text}: search "
              f"{search_score * scale:.2f}, held-out {heldout * scale:.2f}, "
              f"BOPs {costs.bops / 1e6:.1f} M, {evaluations} evaluations, "
              f"{estimation_s + selection_s:.1f} s")
    return row


def sample_hits(evaluator: Evaluator, outputs: np.ndarray) -> np.ndarray | None:
    """Per held-out sample, whether ``outputs`` gets it right under the evaluator's metric
    (top-1 against the labels, agreement against FP32; None for other metrics)."""
    predicted = outputs.reshape(len(outputs), -1).argmax(1)
    if evaluator.metric.name == "top1" and evaluator.data.labels is not None:
        return np.asarray(predicted == evaluator.data.labels)
    if evaluator.metric.name == "agreement":
        return np.asarray(predicted == evaluator.reference.reshape(len(outputs), -1).argmax(1))
    return None


def heldout_scores(evaluator: Evaluator, policy: Policy) -> HeldoutScores:
    """``policy``'s emitted QDQ model (what ships) run once on ``evaluator``'s samples."""
    outputs = evaluator.run_model(evaluator.deployed_model(policy).SerializeToString())
    # The search's utility (KL to FP32 for class metrics) on samples the search never saw:
    # does a search-split win carry over, in the units the search maximized?
    utility = search_utility(evaluator.metric)(outputs, evaluator.reference,
                                               evaluator.data.labels)
    return HeldoutScores(evaluator.score_outputs(outputs), utility,
                         sample_hits(evaluator, outputs))


def paired_differences(arena: Arena, method: str = "shapley"
                       ) -> dict[str, dict[str, dict[str, float]]]:
    """Per budget and other method: ``method``'s held-out metric minus the other's (each
    averaged over its seeds, per sample) and the standard error of that mean difference over
    the held-out samples, both measured on the same samples (paired: the samples' shared
    difficulty cancels)."""
    found: dict[str, dict[str, dict[str, float]]] = {}
    for budget in arena.budgets:
        mine = _mean_hits(arena, budget, method)
        if mine is None:
            continue
        for other in sorted({m for b, m, _ in arena.heldout_hits if b == budget} - {method}):
            theirs = _mean_hits(arena, budget, other)
            assert theirs is not None
            diff = mine - theirs
            found.setdefault(budget, {})[other] = {
                "difference": float(diff.mean()),
                "se": float(diff.std(ddof=1) / np.sqrt(len(diff)))}
    return found


def _mean_hits(arena: Arena, budget: str, method: str) -> np.ndarray | None:
    runs = [hits for (b, m, _), hits in arena.heldout_hits.items()
            if b == budget and m == method]
    return np.mean(runs, axis=0) if runs else None


def add_status(rec: Recorder, clock: Clock, arena: Arena, budget_key: str, method: str,
               seed: int | None, status: str, note: str) -> None:
    """A row without a result: ``infeasible``, ``skipped`` or ``error`` (with the reason)."""
    rec.add("results", {"model": arena.data.key, "profile": arena.profile.name,
                        "budget": budget_key, "method": method, "seed": seed,
                        "status": status, "note": note})
    clock.log(f"  {arena.key} {budget_key} {method}: {status}: {note.splitlines()[0][:160]}")


def guarded(rec: Recorder, clock: Clock, arena: Arena, budget_keys: Sequence[str], method: str,
            seed: int | None, work: Callable[[], None]) -> bool:
    """Run ``work``; an infeasible budget or a crash becomes a status row, not a dead run."""
    try:
        work()
        return True
    except BudgetInfeasibleError as e:
        for key in budget_keys:
            add_status(rec, clock, arena, key, method, seed, "infeasible", str(e))
    except Exception as e:  # a benchmark keeps going; the row records what broke
        note = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"
        for key in budget_keys:
            add_status(rec, clock, arena, key, method, seed, "error", note)
    return False
