"""``smpq-onnx search``: SMPQ under hard device budgets, with a deployable result."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import click
import onnx_ir as ir
from smpq_onnx.cli.options import runtime_config, runtime_options
from smpq_onnx.cli.progress import TerminalProgress

from smpq_onnx.baselines import (
    METHODS,
    amp_search,
    context_search,
    random_search,
    uniform_search,
)
from smpq_onnx.budget import W8A8_BITS, Budget
from smpq_onnx.context import QuantizationContext, build_context
from smpq_onnx.dmpq import DmpqSettings, dmpq_search
from smpq_onnx.emit import encodings, save_model_atomic, write_json_atomic
from smpq_onnx.errors import SmpqError
from smpq_onnx.evalstore import EvaluationStore, fingerprint
from smpq_onnx.evaluator import ENGINE_VERSION
from smpq_onnx.game import SEMANTICS, QuantizationGame
from smpq_onnx.options import Option
from smpq_onnx.plots import bits_per_layer, contribution_heatmap, metric_vs_bops
from smpq_onnx.policy import write_policy, write_text_atomic
from smpq_onnx.report import build_report, markdown
from smpq_onnx.runtime import describe_provider
from smpq_onnx.search import (
    CONTROL_VARIATE,
    DEFAULT_MAX_EVALS,
    SEARCH_ESTIMATORS,
    SearchResult,
    SearchSettings,
    cheapest_policy,
    select,
    shapley_search,
    sized_settings,
)

DEFAULT_HW = "flexible"
ACCURACY_MISSED_EXIT = 4


class AccuracyTargetMissed(SmpqError):
    exit_code = ACCURACY_MISSED_EXIT


@click.command("search")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--hw", "hw_name", default=DEFAULT_HW, show_default=True,
              help="Device profile: built-in name or .yaml path.")
@click.option("--data", help="Evaluation data (default with no MODEL: the bundled example's).")
@click.option("--calib-data", help="Calibration data (default: the last quarter of --data).")
@click.option("--metric", help="top1, agreement, kl, sqnr, cosine or module:function.")
@click.option("--method", type=click.Choice(list(METHODS)), default="shapley", show_default=True,
              help="shapley (SMPQ) or a baseline: uniform, random, context, amp, dmpq "
              "(dmpq needs torch).")
@click.option("--estimator", type=click.Choice(list(SEARCH_ESTIMATORS)),
              default=SearchSettings.estimator, show_default=True, help="Shapley estimator.")
@click.option("--samples", type=int, help="M: permutations (pairs, Owen levels) per round "
              "(default: up to 10, sized to --max-evals).")
@click.option("--rounds", type=int, help="K: rounds between alpha updates (default: up to 2, "
              "sized to --max-evals).")
@click.option("--max-evals", type=int, default=DEFAULT_MAX_EVALS, show_default=True,
              help="Evaluation budget that sizes the default --samples/--rounds.")
@click.option("--semantics", type=click.Choice(list(SEMANTICS)), default="hard",
              show_default=True, help="Several present options of a layer: hard = the one "
              "of largest alpha; mix = softmax(alpha)-weighted mixture (the paper's).")
@click.option("--reference", "reference_text", default="FP32", show_default=True,
              help="Precision of layers with no present option in a coalition (e.g. W8A8).")
@click.option("--truncation", type=float, default=SearchSettings.truncation,
              show_default=True, help="Permutation estimators: stop a permutation once the "
              "metric falls below this fraction of FP32's (0 disables).")
@click.option("--xi", type=float, default=SearchSettings.xi, show_default=True,
              help="Step of the alpha update (paper's xi).")
@click.option("--beta", type=float, default=SearchSettings.beta, show_default=True,
              help="Momentum of the alpha update (paper's beta; lambda = 1 - beta).")
@click.option("--selection", type=click.Choice(["knapsack", "paper"]), default="knapsack",
              show_default=True, help="knapsack: ILP over every budget; paper: argmax alpha.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--budget-bops", type=int, help="Bit operations per sample.")
@click.option("--budget-bops-ratio", type=float, help="Fraction of the model's W8A8 BOPs.")
@click.option("--budget-flash", type=int, help="Weight memory in bytes.")
@click.option("--budget-sram", type=int, help="Peak activation memory in bytes.")
@click.option("--budget-latency-ms", type=float, help="Latency (profiles with throughput).")
@click.option("--max-drop", type=float, help="Cheapest policy within this many points "
              "(percent metrics) or units of FP32.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("smpq_out"),
              show_default=True, help="Output folder.")
@runtime_options
@click.option("--json", "as_json", is_flag=True, help="Print the report JSON to stdout.")
def search_command(model: Path | None, hw_name: str, data: str | None, calib_data: str | None,
                   metric: str | None, method: str, estimator: str, samples: int | None,
                   rounds: int | None, max_evals: int, semantics: str, reference_text: str,
                   truncation: float, xi: float, beta: float, selection: str, seed: int,
                   budget_bops: int | None, budget_bops_ratio: float | None,
                   budget_flash: int | None, budget_sram: int | None,
                   budget_latency_ms: float | None, max_drop: float | None, out_dir: Path,
                   provider: str, threads: int, optimization: str, as_json: bool) -> None:
    """Search per-layer bit-widths of MODEL (default: the bundled example) for a device."""
    if max_drop is not None and method != "shapley":
        raise click.UsageError("--max-drop works with --method shapley")
    if estimator == CONTROL_VARIATE and semantics != "hard":
        raise click.UsageError("--estimator owen-cv needs --semantics hard")
    started = time.perf_counter()
    runtime = runtime_config(provider, threads, optimization)
    with TerminalProgress(enabled=not as_json) as progress:
        context = build_context(model, hw=hw_name, data=data, calib_data=calib_data,
                                metric=metric, runtime=runtime, progress=progress)
        budget = _budget(context, bops=budget_bops, bops_ratio=budget_bops_ratio,
                         flash=budget_flash, sram=budget_sram, latency_ms=budget_latency_ms)
        setup_s = time.perf_counter() - started
        store = EvaluationStore(out_dir / ".cache" / f"evaluations-{_fingerprint(context)}.jsonl")
        context.evaluator.store = store
        base = SearchSettings(estimator=estimator, selection=selection, seed=seed, xi=xi,
                              beta=beta, truncation=truncation or None, semantics=semantics,
                              reference=str(Option.parse(reference_text)))
        game = QuantizationGame(context.space, reference=Option.parse(base.reference),
                                semantics=semantics)
        settings = sized_settings(game, base, max_evals=max_evals, samples=samples,
                                  rounds=rounds)
        try:
            result = _run_method(method, game, context, budget, settings, max_evals, progress)
            missed = None
            if max_drop is not None:
                result, missed = _cheapest_within(result, context, budget, max_drop, settings)
            result = _as_deployed(result, context)
        finally:
            store.close()
    result.phases = {"setup_s": setup_s, **result.phases}
    report = _write_outputs(result, context, budget, settings, out_dir, method=method)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _summary(report, out_dir, percent=context.metric.percent)
    if missed is not None:
        raise missed


def _run_method(method: str, game: QuantizationGame, context: QuantizationContext,
                budget: Budget, settings: SearchSettings, max_evals: int,
                progress: TerminalProgress) -> SearchResult:
    evaluator, costs = context.evaluator, context.costs
    if method == "uniform":
        return uniform_search(game, evaluator, costs, budget)
    if method == "random":
        return random_search(game, evaluator, costs, budget, evaluations=max_evals,
                             seed=settings.seed)
    if method == "context":
        return context_search(game, evaluator, costs, budget, candidates=settings.candidates)
    if method == "amp":
        return amp_search(game, evaluator, costs, budget)
    if method == "dmpq":
        return dmpq_search(game, evaluator, costs, budget, calib_data=context.calib_data,
                           settings=DmpqSettings(seed=settings.seed))
    return shapley_search(game, evaluator, costs, budget, settings, progress)


def _budget(context: QuantizationContext, *, bops: int | None, bops_ratio: float | None,
            flash: int | None, sram: int | None, latency_ms: float | None) -> Budget:
    base = Budget.from_profile(context.profile, context.model)
    if bops_ratio is not None:
        if not 0 < bops_ratio <= 1:
            raise click.BadParameter("must be in (0, 1]", param_hint="--budget-bops-ratio")
        bops = int(bops_ratio * context.model.total_macs * W8A8_BITS)
    return dataclasses.replace(
        base,
        bops=bops if bops is not None else base.bops,
        weight_bytes=flash if flash is not None else base.weight_bytes,
        peak_activation_bytes=sram if sram is not None else base.peak_activation_bytes,
        latency_s=latency_ms / 1e3 if latency_ms is not None else base.latency_s,
    )


def _fingerprint(context: QuantizationContext) -> str:
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


def _as_deployed(result: SearchResult, context: QuantizationContext) -> SearchResult:
    """The final metric is the emitted QDQ model's; the fake-quant engine's is kept beside it."""
    evaluator = context.evaluator
    deployed = evaluator.evaluate_deployed(result.policy).score
    details = {**result.details, "fast_engine_score": evaluator.evaluate(result.policy).score}
    return dataclasses.replace(result, score=deployed, details=details)


def _cheapest_within(result: SearchResult, context: QuantizationContext, budget: Budget,
                     max_drop: float, settings: SearchSettings
                     ) -> tuple[SearchResult, AccuracyTargetMissed | None]:
    """Bisect the BOPs budget for the cheapest selection within ``max_drop`` of FP32."""
    scale = 100.0 if context.metric.percent else 1.0
    target = result.fp32_score - max_drop / scale
    costs, evaluator, game = context.costs, context.evaluator, result.game
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
    return result, AccuracyTargetMissed(
        f"no policy within {max_drop:g} of FP32 ({result.fp32_score * scale:.4f}) meets the "
        f"budget; the best found ({shown}) was written; relax the budget or --max-drop")


def _write_outputs(result: SearchResult, context: QuantizationContext, budget: Budget,
                   settings: SearchSettings, out_dir: Path, *, method: str) -> dict[str, Any]:
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
        provider=describe_provider(context.runtime))
    write_json_atomic(report, out_dir / "report.json")
    write_text_atomic(out_dir / "report.md", markdown(report, percent=context.metric.percent))
    if report["contributions"]:
        contribution_heatmap(report, out_dir / "contributions.png")
    bits_per_layer(report, out_dir / "bits_per_layer.png")
    metric_vs_bops(report, out_dir / "metric_vs_bops.png")
    return report


def _summary(report: dict[str, Any], out_dir: Path, *, percent: bool) -> None:
    scale, unit = (100.0, " %") if percent else (1.0, "")
    click.echo(f"model {report['model']} on {report['profile']}: {report['metric']} "
               f"FP32 {report['fp32'] * scale:.4f}{unit}, chosen {report['final'] * scale:.4f}"
               f"{unit} (emitted model"
               + (f"; simulated {report['final_fast_engine'] * scale:.4f}{unit})"
                  if report.get("final_fast_engine") is not None else ")"))
    for line in report["budget"]:
        click.echo(f"  {line['resource']:<22} {line['used']:>14.6g} <= {line['limit']:<14.6g} "
                   f"{'ok' if line['fits'] else 'OVER'}")
    options = sorted({f"W{v['w_bits']}A{v['a_bits']}" for v in report["policy"].values()})
    click.echo(f"  options used: {', '.join(options)}")
    click.echo(f"  {report['evaluations']} evaluations ({report['resumed_evaluations']} resumed),"
               f" {sum(report['phases_s'].values()):.1f} s")
    click.echo(f"wrote {out_dir}/model.qdq.onnx, policy.json, report.json, report.md and plots")
