"""``search``: per-layer bit-widths under the device's budgets, written as a deployable result.

model + profile + data -> context (calibration, evaluator) -> budget -> method (SMPQ or a
baseline) -> the chosen policy scored as its emitted QDQ model -> ``out``: ``model.qdq.onnx``,
encodings, ``policy.json``, ``report.json``, ``report.md`` and plots. Finished evaluations are
appended to ``out/.cache/evaluations-<hash>.jsonl``; the same call after a kill resumes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx_ir as ir

from smpq_onnx.api.choices import one_of, rounding_settings, runtime_config, writable_folder
from smpq_onnx.api.context import (
    DEFAULT_ROUNDING,
    SEARCH_UNLABELED_METRIC,
    Progress,
    QuantizationContext,
    build_context,
    searching_on,
)
from smpq_onnx.api.executing import ExecutorChoice
from smpq_onnx.api.results import SearchOutcome
from smpq_onnx.engine.evalstore import EvaluationStore, fingerprint
from smpq_onnx.engine.evaluator import ENGINE_VERSION, Evaluator
from smpq_onnx.engine.metrics import search_utility
from smpq_onnx.errors import InvalidArgumentError, SmpqError
from smpq_onnx.export.emit import encodings, save_model_atomic, write_json_atomic
from smpq_onnx.hardware.budget import W8A8_BITS, Budget
from smpq_onnx.model.runtime import describe_provider
from smpq_onnx.quant.options import FP32, Option
from smpq_onnx.quant.policy import write_policy, write_text_atomic
from smpq_onnx.report.document import build_report, in_reported_metric, markdown
from smpq_onnx.report.plots import bits_per_layer, contribution_heatmap, metric_vs_bops
from smpq_onnx.strategy.baselines import (
    METHODS,
    amp_search,
    context_search,
    random_search,
    uniform_search,
)
from smpq_onnx.strategy.dmpq.search import DmpqSettings, dmpq_search
from smpq_onnx.strategy.evolution import evolution_search
from smpq_onnx.strategy.game import SEMANTICS, QuantizationGame
from smpq_onnx.strategy.local import local_search
from smpq_onnx.strategy.pins import resolve_pins
from smpq_onnx.strategy.refine import refined
from smpq_onnx.strategy.smpq import (
    CONTROL_VARIATE,
    DEFAULT_MAX_EVALS,
    GAMES,
    SEARCH_ESTIMATORS,
    SearchResult,
    SearchSettings,
    cheapest_policy,
    infeasible_error,
    select,
    shapley_search,
    sized_settings,
)

DEFAULT_HW = "flexible"
DEFAULT_OUT = Path("smpq_out")
SELECTIONS = ("knapsack", "paper")


def default_estimator(game: str) -> str:
    """The budget-local game measures each side lowered alone from its window's top (AMP's
    clean single-layer table) and samples only what that table leaves unexplained; the
    paper's game keeps plain Owen sampling."""
    return CONTROL_VARIATE if game == "local" else SearchSettings.estimator


def default_anchor(game: str) -> str:
    """Where ``owen-cv``'s single-side table is measured: from the window's top in the
    budget-local game, from the empty coalition in the paper's."""
    return "ceiling" if game == "local" else SearchSettings.anchor


def search(model: str | Path | None = None, *, hw: str = DEFAULT_HW,
           data: str | Path | None = None, calib_data: str | Path | None = None,
           metric: str | None = None, method: str = "shapley",
           estimator: str | None = None, samples: int | None = None,
           rounds: int | None = None, max_evals: int = DEFAULT_MAX_EVALS,
           game: str = SearchSettings.game,
           semantics: str = "hard", reference: str = "FP32",
           truncation: float | None = SearchSettings.truncation, xi: float = SearchSettings.xi,
           beta: float = SearchSettings.beta, selection: str = "knapsack", seed: int = 0,
           budget_bops: int | None = None, budget_bops_ratio: float | None = None,
           budget_flash: int | None = None, budget_sram: int | None = None,
           budget_latency_ms: float | None = None, max_drop: float | None = None,
           out: str | Path = DEFAULT_OUT, rounding: str = DEFAULT_ROUNDING.method,
           bias_correction: bool = DEFAULT_ROUNDING.bias_correction,
           scale_search: bool = DEFAULT_ROUNDING.scale_search,
           provider: str = "auto", threads: int = 0,
           optimization: str = "all",
           input_shapes: Mapping[str, Sequence[int]] | None = None,
           pins: Sequence[str] = (), keep_first_last: bool = False,
           refine_share: float = 0.0, interactions: int = SearchSettings.interactions,
           surrogate: int = SearchSettings.surrogate,
           executor: str = "local", workers: int | None = None,
           ray_address: str | None = None,
           progress: Progress | None = None) -> SearchOutcome:
    """Search per-layer bit-widths of ``model`` (default: the bundled example) for ``hw``.

    Budgets not given come from the profile. ``method``: shapley (SMPQ) or a baseline
    (uniform, random, context, amp, dmpq, evolution). Raises the typed errors of
    :mod:`smpq_onnx.errors` (``BudgetInfeasibleError`` when no policy meets the budget).
    With ``max_drop``, the cheapest selection within that drop of FP32; if none meets it the
    best policy is still written and the outcome's ``target_missed`` says so.
    ``input_shapes`` (input -> full shape, batch 1) fixes symbolic dimensions besides the
    batch (else the data's first sample does); budgets and costs are per sample at those
    shapes. ``pins``: ``PATTERN=OPTION`` texts (glob on layer names, e.g.
    ``"conv1*=W8A8"``); ``keep_first_last``: the first and last layers at the profile's
    highest integer option (:mod:`smpq_onnx.strategy.pins`). Pinned layers are not
    searched; a pin the profile forbids raises ``PolicyError``. ``refine_share`` (shapley
    only): the fraction of ``max_evals`` kept for a measured hill climb from the selected
    policy (:mod:`smpq_onnx.strategy.refine`). ``interactions`` (budget-local game): units
    whose pair terms are measured at each window's best proposal
    (:mod:`smpq_onnx.strategy.interactions`). ``surrogate`` (budget-local game): policies
    proposed by an additive fit on every measured policy, measured within ``max_evals``
    (:mod:`smpq_onnx.strategy.surrogate`). ``executor`` (local or ray), ``workers`` and
    ``ray_address``: where the evaluations run (:mod:`smpq_onnx.api.executing`); the policy
    found does not depend on them. Local workers are spawned processes: a script calling
    this needs the ``if __name__ == "__main__":`` guard.
    """
    one_of(method, list(METHODS), "method")
    estimator = estimator or default_estimator(game)
    one_of(estimator, list(SEARCH_ESTIMATORS), "estimator")
    one_of(semantics, list(SEMANTICS), "semantics")
    one_of(selection, SELECTIONS, "selection")
    one_of(game, list(GAMES), "game")
    if game == "local" and method == "shapley" and (
            semantics != "hard" or selection != "knapsack" or Option.parse(reference) != FP32):
        raise InvalidArgumentError("--semantics mix, --selection paper and --reference belong "
                                   "to the paper's game: add --game global")
    if max_drop is not None and method != "shapley":
        raise InvalidArgumentError("--max-drop works with --method shapley")
    if not 0.0 <= refine_share < 1.0:
        raise InvalidArgumentError(f"--refine-share must be in [0, 1), got {refine_share}")
    if refine_share and method != "shapley":
        raise InvalidArgumentError("--refine-share works with --method shapley")
    if interactions < 0:
        raise InvalidArgumentError(f"--interactions must be 0 or more, got {interactions}")
    if interactions and (method != "shapley" or game != "local"):
        raise InvalidArgumentError("--interactions works with --method shapley --game local")
    if surrogate < 0:
        raise InvalidArgumentError(f"--surrogate must be 0 or more, got {surrogate}")
    if surrogate and (method != "shapley" or game != "local"):
        raise InvalidArgumentError("--surrogate works with --method shapley --game local")
    if estimator == CONTROL_VARIATE and semantics != "hard":
        raise InvalidArgumentError("--estimator owen-cv needs --semantics hard")
    spread = ExecutorChoice(executor, workers, ray_address).check()
    started = time.perf_counter()
    out_dir = writable_folder(Path(out))
    runtime = runtime_config(provider, threads, optimization)
    context = build_context(model, hw=hw, data=data, calib_data=calib_data, metric=metric,
                            runtime=runtime,
                            rounding=rounding_settings(rounding, bias_correction, scale_search),
                            input_shapes=input_shapes, progress=progress,
                            unlabeled_metric=SEARCH_UNLABELED_METRIC)
    reported = context.evaluator
    if metric is None and max_drop is None:  # a drop is in the reported metric's own points
        context = searching_on(context, search_utility(context.metric))
    budget = search_budget(context, bops=budget_bops, bops_ratio=budget_bops_ratio,
                           flash=budget_flash, sram=budget_sram, latency_ms=budget_latency_ms)
    setup_s = time.perf_counter() - started
    store = EvaluationStore(out_dir / ".cache" / f"evaluations-{resume_key(context)}.jsonl")
    context.evaluator.store = store
    base = SearchSettings(estimator=estimator, selection=selection, seed=seed, xi=xi,
                          beta=beta, truncation=truncation or None, semantics=semantics,
                          reference=str(Option.parse(reference)), game=game,
                          anchor=default_anchor(game), interactions=interactions,
                          surrogate=surrogate)
    pinned = resolve_pins(context.space, pins, keep_first_last=keep_first_last)
    quant_game = QuantizationGame(context.space, reference=Option.parse(base.reference),
                                  semantics=semantics, pins=pinned)
    shapley_evals = max(1, round(max_evals * (1.0 - refine_share)))
    sized = bool(quant_game.players) and base.game == "global"  # the local game sizes each window
    settings = (sized_settings(quant_game, base, max_evals=shapley_evals, samples=samples,
                               rounds=rounds) if sized else base)
    try:
        spread.attach(context.evaluator)
        before = context.evaluator.n_evaluations
        result = (run_method(method, quant_game, context, budget, settings, max_evals,
                             progress, samples=samples, rounds=rounds,
                             shapley_evals=shapley_evals)
                  if quant_game.players else pinned_only(quant_game, context, budget))
        remaining = max_evals - (context.evaluator.n_evaluations - before)
        if refine_share and quant_game.players:  # none left when the estimator overshot
            result = refined(result, context.evaluator, context.costs, budget,
                             evaluations=max(remaining, 0), seed=seed)
        missed = None
        if max_drop is not None and quant_game.players:
            result, missed = cheapest_within(result, context, budget, max_drop)
        result = as_deployed(result, context)
        executor_report = spread.describe(context.evaluator)
    finally:
        context.evaluator.on_evaluation = None
        spread.close(context.evaluator)
        store.close()
    result.phases = {"setup_s": setup_s - context.rounding_s, "rounding_s": context.rounding_s,
                     **result.phases}
    report = write_outputs(result, context, budget, settings, out_dir, method=method,
                           executor=executor_report,
                           reported=None if reported is context.evaluator else reported)
    return SearchOutcome(policy=result.policy, final=report["final"], fp32=report["fp32"],
                         out_dir=out_dir, report=report, target_missed=missed,
                         percent=reported.metric.percent)


def run_method(method: str, game: QuantizationGame, context: QuantizationContext,
               budget: Budget, settings: SearchSettings, max_evals: int,
               progress: Progress | None, *, samples: int | None = None,
               rounds: int | None = None, shapley_evals: int | None = None) -> SearchResult:
    """``samples`` and ``rounds`` (None: sized) are the local game's Owen samples per
    window and windows; ``shapley_evals`` its evaluations (default ``max_evals``)."""
    evaluator, costs = context.evaluator, context.costs
    if method != "shapley" and progress is not None:
        count_evaluations(evaluator, method, expected_evaluations(method, game, max_evals),
                          progress)
    if method == "uniform":
        return uniform_search(game, evaluator, costs, budget)
    if method == "random":
        return random_search(game, evaluator, costs, budget, evaluations=max_evals,
                             seed=settings.seed)
    if method == "context":
        return context_search(game, evaluator, costs, budget, candidates=settings.candidates)
    if method == "amp":
        return amp_search(game, evaluator, costs, budget)
    if method == "evolution":
        return evolution_search(game, evaluator, costs, budget, evaluations=max_evals,
                                seed=settings.seed)
    if method == "dmpq":
        return dmpq_search(game, evaluator, costs, budget, calib_data=context.calib_data,
                           settings=DmpqSettings(seed=settings.seed))
    if settings.game == "local":
        return local_search(game, evaluator, costs, budget, settings,
                            max_evals=shapley_evals or max_evals, samples=samples,
                            windows=rounds, progress=progress)
    return shapley_search(game, evaluator, costs, budget, settings, progress)


def expected_evaluations(method: str, game: QuantizationGame, max_evals: int) -> int:
    """About how many evaluations a baseline makes (its progress bar's length)."""
    free = [unit for unit in game.units if not unit.pinned]
    if method in ("random", "evolution"):
        return max_evals
    if method == "amp":  # each unit alone at each lower option, then the chosen point
        return 2 + sum(len(unit.options) - 1 for unit in free)
    if method == "context":
        per_option = 2 if game.split_sides else 1
        return 1 + per_option * sum(len(unit.options) for unit in free)
    return 1


def count_evaluations(evaluator: Evaluator, method: str, total: int,
                      progress: Progress) -> None:
    """Report ``method``'s evaluations (from any worker) as they are recorded."""
    start = evaluator.n_evaluations

    def recorded(n: int) -> None:
        done = n - start
        if done <= total:  # the bar closes at ``total``; later evaluations are not drawn
            progress(method, done, total)

    evaluator.on_evaluation = recorded


def pinned_only(game: QuantizationGame, context: QuantizationContext,
                budget: Budget) -> SearchResult:
    """Every unit pinned: the one policy there is, if it meets the budget."""
    policy = game.realize([])
    costs = context.costs.cost(policy)
    if not budget.fits(costs):
        raise infeasible_error(game, context.costs, budget)
    score = context.evaluator.evaluate(policy).score
    return SearchResult(policy, score, costs, context.evaluator.fp32_score, game, None, None,
                        None, [(policy, score)], {}, details={"note": "every layer pinned"})


def search_budget(context: QuantizationContext, *, bops: int | None, bops_ratio: float | None,
                  flash: int | None, sram: int | None, latency_ms: float | None) -> Budget:
    """The profile's budgets, overridden by those given."""
    base = Budget.from_profile(context.profile, context.model)
    if bops_ratio is not None:
        if not 0 < bops_ratio <= 1:
            raise InvalidArgumentError(
                "Invalid value for '--budget-bops-ratio': must be in (0, 1]")
        bops = int(bops_ratio * context.model.total_macs * W8A8_BITS)
    return dataclasses.replace(
        base,
        bops=bops if bops is not None else base.bops,
        weight_bytes=flash if flash is not None else base.weight_bytes,
        peak_activation_bytes=sram if sram is not None else base.peak_activation_bytes,
        latency_s=latency_ms / 1e3 if latency_ms is not None else base.latency_s,
    )


def resume_key(context: QuantizationContext) -> str:
    """Hash of everything an evaluation's result depends on (the store's file name)."""
    evaluator = context.evaluator
    arrays = [a.tobytes() for d in (context.eval_data, context.calib_data)
              for a in d.inputs.values()]
    labels = context.eval_data.labels.tobytes() if context.eval_data.labels is not None else b""
    return fingerprint(
        ir.to_proto(context.model.ir_model).SerializeToString(), *arrays, labels,
        context.profile.model_dump_json(), context.metric.name,
        repr(context.calibration.settings), repr(context.runtime), str(evaluator.batch_size),
        # Segment boundaries change float accumulation at full optimization: part of the key.
        repr([segment.output for segment in evaluator.plan.segments]), ENGINE_VERSION)


def as_deployed(result: SearchResult, context: QuantizationContext) -> SearchResult:
    """The final metric is the emitted QDQ model's; the fake-quant engine's is kept beside it."""
    evaluator = context.evaluator
    deployed = evaluator.evaluate_deployed(result.policy).score
    details = {**result.details, "fast_engine_score": evaluator.evaluate(result.policy).score}
    return dataclasses.replace(result, score=deployed, details=details)


def cheapest_within(result: SearchResult, context: QuantizationContext, budget: Budget,
                    max_drop: float) -> tuple[SearchResult, str | None]:
    """Bisect the BOPs budget for the cheapest selection within ``max_drop`` of FP32.

    Returns the result and, when no selection met the target, the message saying so.
    """
    scale = 100.0 if context.metric.percent else 1.0
    target = result.fp32_score - max_drop / scale
    costs, evaluator, game = context.costs, context.evaluator, result.played
    assert result.phi is not None, "--max-drop needs Shapley values"
    phi = result.phi
    best_ok = result if result.score >= target else None
    low = float(costs.cost(cheapest_policy(game)).bops)
    high = float(result.costs.bops)
    for _ in range(8):
        if best_ok is None or high - low < 0.01 * high:
            break
        middle = (low + high) / 2
        trial_budget = dataclasses.replace(budget, bops=int(middle))
        try:
            policy, score, scored = select(game, costs, trial_budget, phi, evaluator,
                                           candidates=1)
        except SmpqError:
            low = middle
            continue
        if score >= target:
            best_ok = dataclasses.replace(result, policy=policy, score=score,
                                          costs=costs.cost(policy), candidates=scored)
            high = float(best_ok.costs.bops)
        else:
            low = middle
    if best_ok is not None:
        return best_ok, None
    shown = f"{result.score * scale:.4f}"
    return result, (
        f"no policy within {max_drop:g} of FP32 ({result.fp32_score * scale:.4f}) meets the "
        f"budget; the best found ({shown}) was written; relax the budget or --max-drop")


def write_outputs(result: SearchResult, context: QuantizationContext, budget: Budget,
                  settings: SearchSettings, out_dir: Path, *, method: str,
                  executor: dict[str, Any] | None = None,
                  reported: Evaluator | None = None) -> dict[str, Any]:
    """Emit the model and write the report; with ``reported`` (the user's metric where the
    search maximized another utility) the report's headline scores are that metric's."""
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    emitted = context.evaluator.deployed_model(result.policy)
    save_model_atomic(emitted, out_dir / "model.qdq.onnx")
    write_json_atomic(encodings(context.model, result.policy, context.calibration),
                      out_dir / "model.qdq.encodings.json")
    write_policy(result.policy, out_dir / "policy.json")
    history = [{"score": r.score, "bops": sum(context.costs.layer_bops(n, o)
                                              for n, o in p.items())}
               for p, r in context.evaluator.history.items()]
    result.phases["emit_s"] = time.perf_counter() - start
    report = build_report(
        result, method=method, model=context.model.source, profile=context.profile.name,
        metric=context.metric.name, budget=budget, costs=context.costs, settings=settings,
        evaluations=context.evaluator.n_evaluations, resumed=context.evaluator.n_resumed,
        deployed_evaluations=context.evaluator.n_deployed,
        history=history, phases=result.phases, n_eval=len(context.eval_data),
        provider=describe_provider(context.runtime),
        rounding={"method": context.rounding.method,
                  "bias_correction": context.rounding.bias_correction,
                  "scale_search": context.rounding.scale_search,
                  "from_cache": context.rounding_cached})
    report["executor"] = executor
    if reported is not None:
        report = in_reported_metric(
            report, reported.metric.name, fp32=reported.fp32_score,
            final=reported.evaluate_deployed(result.policy).score,
            final_fast_engine=reported.evaluate(result.policy).score)
    percent = (reported or context.evaluator).metric.percent
    write_json_atomic(report, out_dir / "report.json")
    write_text_atomic(out_dir / "report.md", markdown(report, percent=percent))
    if report["contributions"]:
        contribution_heatmap(report, out_dir / "contributions.png")
    bits_per_layer(report, out_dir / "bits_per_layer.png")
    metric_vs_bops(report, out_dir / "metric_vs_bops.png")
    return report
