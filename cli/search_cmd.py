"""``smpq-onnx search``: SMPQ under hard device budgets, with a deployable result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from smpq_onnx.api.executing import EXECUTORS
from smpq_onnx.api.searching import DEFAULT_HW, DEFAULT_OUT, SELECTIONS, search
from smpq_onnx.cli.options import input_shape_option, rounding_options, runtime_options
from smpq_onnx.cli.progress import TerminalProgress
from smpq_onnx.errors import AccuracyTargetMissedError
from smpq_onnx.strategy.baselines import METHODS
from smpq_onnx.strategy.game import SEMANTICS
from smpq_onnx.strategy.smpq import (
    DEFAULT_MAX_EVALS,
    GAMES,
    SEARCH_ESTIMATORS,
    SearchSettings,
)


@click.command("search")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--hw", "hw_name", default=DEFAULT_HW, show_default=True,
              help="Device profile: built-in name or .yaml path.")
@click.option("--data", help="Evaluation data (default with no MODEL: the bundled example's).")
@click.option("--calib-data", help="Calibration data (default: the last quarter of --data).")
@click.option("--metric", help="top1, agreement, kl, sqnr, cosine or module:function "
              "(default: class scores, top1 with labels, else kl, finer than agreement; "
              "other outputs, cosine, over the tokens an attention mask keeps). Without "
              "--metric (and --max-drop) the search maximizes KL to FP32 on class scores "
              "and reports the default metric; a metric named here is searched on itself.")
@click.option("--method", type=click.Choice(list(METHODS)), default="shapley", show_default=True,
              help="shapley (SMPQ) or a baseline: uniform, random, context, amp, dmpq "
              "(needs torch) or evolution (regularized evolution, --max-evals evaluations).")
@click.option("--game", type=click.Choice(list(GAMES)), default=SearchSettings.game,
              show_default=True, help="shapley: local = contributions measured one bit-width "
              "step around policies that fit the budget (trust region); global = the paper's "
              "game over every option, absent layers at --reference.")
@click.option("--estimator", type=click.Choice(list(SEARCH_ESTIMATORS)),
              help="Shapley estimator (default: owen-cv for --game local, its table measured "
              "from each window's top; owen for --game global).")
@click.option("--samples", type=int, help="M: permutations (pairs, Owen levels) per round, "
              "or per window of --game local (default: sized to --max-evals, up to 10).")
@click.option("--rounds", type=int, help="K: rounds between alpha updates, or windows of "
              "--game local (default: sized to --max-evals, up to 2 rounds or 4 windows).")
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
@click.option("--selection", type=click.Choice(list(SELECTIONS)), default="knapsack",
              show_default=True, help="knapsack: ILP over every budget; paper: argmax alpha.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--budget-bops", type=int, help="Bit operations per sample.")
@click.option("--budget-bops-ratio", type=float, help="Fraction of the model's W8A8 BOPs.")
@click.option("--budget-flash", type=int, help="Weight memory in bytes.")
@click.option("--budget-sram", type=int, help="Peak activation memory in bytes.")
@click.option("--budget-latency-ms", type=float, help="Latency (profiles with throughput).")
@click.option("--max-drop", type=float, help="Cheapest policy within this many points "
              "(percent metrics) or units of FP32.")
@click.option("--pin", "pins", multiple=True, metavar="PATTERN=OPTION",
              help="Fix the layers whose names match a glob, e.g. 'features.0*=W8A8' or "
              "'classifier*=FP32' (where the profile allows float); repeatable, later pins "
              "win. Pinned layers are not searched.")
@click.option("--refine-share", type=float, default=0.0, show_default=True,
              help="Shapley only: fraction of --max-evals kept for a measured hill climb "
              "(budget-neutral moves) from the selected policy.")
@click.option("--interactions", type=click.IntRange(min=0), default=0, show_default=True,
              help="Budget-local game: units whose pairwise terms are measured at each "
              "window's best proposal and added to the knapsack (K + K(K-1)/2 evaluations "
              "per window); 0: first-order only.")
@click.option("--surrogate", type=click.IntRange(min=0), default=SearchSettings.surrogate,
              show_default=True, help="Budget-local game: policies proposed by an additive "
              "surrogate fitted on every measured policy, measured within --max-evals; "
              "0: none.")
@click.option("--keep-first-last", is_flag=True,
              help="Fix the first and last quantizable layers at the profile's highest integer "
              "option.")
@click.option("--executor", type=click.Choice(list(EXECUTORS)), default="local",
              show_default=True, help="Where evaluations run: local worker processes, or Ray "
              "actors (pip install 'smpq-onnx[ray]'); the policy found is the same.")
@click.option("--workers", type=click.IntRange(min=1), help="Evaluation workers. local: "
              "1 (default) evaluates in this process, each evaluation's batches in threads; N "
              "spawns N single-threaded worker processes. ray: default the cluster's free "
              "CPUs.")
@click.option("--ray-address", metavar="ADDR", help="With --executor ray: the cluster to "
              "join (e.g. 10.0.0.5:6379, as `ray start --head` prints; default: a local "
              "instance).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT,
              show_default=True, help="Output folder.")
@rounding_options
@runtime_options
@input_shape_option
@click.option("--json", "as_json", is_flag=True, help="Print the report JSON to stdout.")
def search_command(model: Path | None, hw_name: str, data: str | None, calib_data: str | None,
                   metric: str | None, method: str, game: str, estimator: str | None,
                   samples: int | None,
                   rounds: int | None, max_evals: int, semantics: str, reference_text: str,
                   truncation: float, xi: float, beta: float, selection: str, seed: int,
                   budget_bops: int | None, budget_bops_ratio: float | None,
                   budget_flash: int | None, budget_sram: int | None,
                   budget_latency_ms: float | None, max_drop: float | None,
                   refine_share: float, interactions: int, surrogate: int,
                   pins: tuple[str, ...],
                   keep_first_last: bool, executor: str, workers: int | None,
                   ray_address: str | None,
                   out_dir: Path,
                   rounding: str, bias_correction: bool, scale_search: bool, provider: str,
                   threads: int, optimization: str,
                   input_shapes: dict[str, tuple[int, ...]] | None, as_json: bool) -> None:
    """Search per-layer bit-widths of MODEL (default: the bundled example) for a device."""
    with TerminalProgress(enabled=not as_json) as progress:
        outcome = search(
            model, hw=hw_name, data=data, calib_data=calib_data, metric=metric, method=method,
            game=game, estimator=estimator, samples=samples, rounds=rounds,
            max_evals=max_evals,
            semantics=semantics, reference=reference_text, truncation=truncation, xi=xi,
            beta=beta, selection=selection, seed=seed, budget_bops=budget_bops,
            budget_bops_ratio=budget_bops_ratio, budget_flash=budget_flash,
            budget_sram=budget_sram, budget_latency_ms=budget_latency_ms, max_drop=max_drop,
            out=out_dir, rounding=rounding, bias_correction=bias_correction,
            scale_search=scale_search, provider=provider,
            threads=threads, optimization=optimization,
            input_shapes=input_shapes, pins=pins, keep_first_last=keep_first_last,
            refine_share=refine_share, interactions=interactions, surrogate=surrogate,
            executor=executor,
            workers=workers,
            ray_address=ray_address, progress=progress)
    if as_json:
        click.echo(json.dumps(outcome.report, indent=2))
    else:
        _summary(outcome.report, out_dir, percent=outcome.percent)
    if outcome.target_missed is not None:
        raise AccuracyTargetMissedError(outcome.target_missed)


def _summary(report: dict[str, Any], out_dir: Path, *, percent: bool) -> None:
    scale, unit = (100.0, " %") if percent else (1.0, "")
    click.echo(f"model {report['model']} on {report['profile']}: {report['metric']} "
               f"FP32 {report['fp32'] * scale:.4f}{unit}, chosen {report['final'] * scale:.4f}"
               f"{unit} (emitted model"
               + (f"; simulated {report['final_fast_engine'] * scale:.4f}{unit})"
                  if report.get("final_fast_engine") is not None else ")"))
    utility = report.get("search_utility")
    if utility:
        click.echo(f"  searched on {utility['metric']}: chosen {utility['final']:.6g}, "
                   f"FP32 {utility['fp32'] + 0.0:.6g}")
    for line in report["budget"]:
        click.echo(f"  {line['resource']:<22} {line['used']:>14.6g} <= {line['limit']:<14.6g} "
                   f"{'ok' if line['fits'] else 'OVER'}")
    options = sorted({f"W{v['w_bits']}A{v['a_bits']}" for v in report["policy"].values()})
    click.echo(f"  options used: {', '.join(options)}")
    spread = report.get("executor") or {}
    where = (f" on {spread['workers']} {spread['name']} workers" if spread
             and not spread.get("in_process") else "")
    click.echo(f"  {report['evaluations']} evaluations ({report['resumed_evaluations']} resumed)"
               f"{where}, {sum(report['phases_s'].values()):.1f} s")
    click.echo(f"wrote {out_dir}/model.qdq.onnx, policy.json, report.json, report.md and plots")
