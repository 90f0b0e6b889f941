"""The paper's two analyses on an arena of the flexible profile, after every method ran.

1. Ranking (paper Fig. 5): random distinct policies with BOPs within ±window of the W4A8
   budget, each the knapsack optimum of random normal utilities under a BOPs ceiling and
   floor (options below ``tau_min_bits`` on either side excluded where the model collapses
   there). Each predictor scores a policy by the sum of its options' utilities; Kendall tau-b
   against the held-out metric, with a bootstrap interval over the policies.
2. The alpha pitfall: around a fixed uniform background, per unit and side (weight bits or
   activation bits), every option of that side is switched in alone and measured on the
   held-out split. Per (unit, side): does argmax alpha (DMPQ) / argmax phi (Shapley) pick a
   measured best option (exactly, and within one binomial standard error of the best), and
   tau-b between the score and the measurement. The background is
   uniform W4A4 (the context background) if it keeps at least half of the FP32 metric, else
   uniform W4A8: around a collapsed policy every switch measures the same.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from harness.core import Arena, Clock, Config, Recorder
from harness.methods import TAU_BUDGET
from harness.ranking import argmax_disagreement, group_log_softmax, per_item_tau, tau_b_with_ci
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.quant.options import Option
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.selection import Infeasible, KnapsackProblem, solve
from smpq_onnx.strategy.smpq import policy_of, unit_cost_tables

PITFALL_BACKGROUNDS = (Option(4, 4), Option(4, 8))
"""Tried in order; the first keeping half of the FP32 held-out metric is the background."""


def unit_tables(game: QuantizationGame, values: np.ndarray) -> list[np.ndarray]:
    """Per unit, the utility of each option from per-player values."""
    return [np.array([table[o] for o in unit.options])
            for unit, table in zip(game.units, game.unit_utilities(values), strict=True)]


def side_groups(game: QuantizationGame) -> list[list[int]]:
    """Player indices per (unit, side): the groups alpha is a softmax over."""
    groups: dict[tuple[int, str], list[int]] = {}
    for index, player in enumerate(game.players):
        groups.setdefault((player.unit, player.side), []).append(index)
    return list(groups.values())


def iso_bops_choices(game: QuantizationGame, costs: CostModel, target: float, window: float,
                     count: int, seed: int, *, min_bits: int = 0) -> list[list[int]]:
    """Up to ``count`` distinct random choices with BOPs in [1 - window, 1 + window] * target."""
    bops = unit_cost_tables(game, costs)["bops"]
    low = [np.array([float(min(o.w_bits, o.a_bits) < min_bits) for o in unit.options])
           for unit in game.units]
    resources = {"bops": bops, "bops_floor": [-t for t in bops], "low_bits": low}
    limits = {"bops": (1 + window) * target, "bops_floor": -(1 - window) * target,
              "low_bits": 0.0}
    rng = np.random.default_rng(seed)
    found: dict[tuple[int, ...], None] = {}
    for _ in range(count * 5):
        utilities = [rng.normal(size=len(unit.options)) for unit in game.units]
        try:
            found[tuple(solve(KnapsackProblem(utilities, resources, limits)))] = None
        except Infeasible:
            continue
        if len(found) >= count:
            break
    return [list(choice) for choice in found]


def predictors(arena: Arena) -> dict[str, tuple[str, int | None, list[np.ndarray]]]:
    """Name -> (method, seed, per-unit option utilities) for every score we can rank with."""
    game = arena.game
    out: dict[str, tuple[str, int | None, list[np.ndarray]]] = {}
    for seed, phi in sorted(arena.phi.items()):
        out[f"shapley-paper seed {seed}"] = ("shapley-paper", seed, unit_tables(game, phi))
    for seed, alpha in sorted(arena.dmpq_alpha.items()):
        log_p = group_log_softmax(alpha, side_groups(game))
        out[f"dmpq seed {seed}"] = ("dmpq", seed, unit_tables(game, log_p))
    if arena.context is not None:
        out["context"] = ("context", None, arena.context)
    drop = arena.amp_drop
    if drop is not None and all(len(d) == len(u.options)
                                for d, u in zip(drop, game.units, strict=True)):
        out["amp"] = ("amp", None, [np.array([-d[o] for o in u.options])
                                    for d, u in zip(drop, game.units, strict=True)])
    return out


def tau_analysis(arena: Arena, cfg: Config, rec: Recorder, clock: Clock) -> None:
    """tau-b over random iso-BOPs policies of every option, then over iso-BOPs policies of
    each distinct last window the default search played at the tau budget (its values
    predict only inside their window; every other predictor ranks the same policies)."""
    budget = arena.budgets[TAU_BUDGET]
    assert budget.bops is not None
    min_bits = cfg.models[arena.data.key].tau_min_bits
    full = predictors(arena)
    choices = iso_bops_choices(arena.game, arena.costs, budget.bops, cfg.tau_window,
                               cfg.tau_policies, seed=0, min_bits=min_bits)
    clock.log(f"  {arena.key} tau: {len(choices)} policies within ±{cfg.tau_window:.0%} of "
              f"{budget.bops / 1e6:.1f} M BOPs (options of >= {min_bits} bits); evaluating "
              "them on the held-out split")
    rec.add("tau", _rank(arena, cfg, clock, "all options", arena.game, choices, full))
    windows: dict[tuple[tuple[Option, ...], ...], list[int]] = {}
    for seed, (local, _) in sorted(arena.local_values.items()):
        windows.setdefault(tuple(unit.options for unit in local.units), []).append(seed)
    for seeds in windows.values():
        local = arena.local_values[seeds[0]][0]
        choices = iso_bops_choices(local, arena.costs, budget.bops, cfg.tau_window,
                                   cfg.tau_policies, seed=0, min_bits=min_bits)
        tables: dict[str, tuple[str, int | None, list[np.ndarray]]] = {
            f"shapley seed {seed} (window values)":
            ("shapley", seed, unit_tables(local, arena.local_values[seed][1]))
            for seed in seeds}
        for name, (method, owner, table) in full.items():
            tables[name] = (method, owner, [
                np.array([t[unit.options.index(o)] for o in window.options])
                for t, unit, window in zip(table, arena.game.units, local.units, strict=True)])
        label = f"window of shapley seed{'s' if len(seeds) > 1 else ''} " + \
            ",".join(map(str, seeds))
        clock.log(f"  {arena.key} tau: {len(choices)} iso-BOPs policies in the {label}")
        rec.add("tau", _rank(arena, cfg, clock, label, local, choices, tables))


def _rank(arena: Arena, cfg: Config, clock: Clock, policy_set: str, game: QuantizationGame,
          choices: list[list[int]], tables: dict[str, tuple[str, int | None, list[np.ndarray]]]
          ) -> dict[str, Any]:
    """Held-out metric of each choice of ``game`` and tau-b of every predictor against it."""
    start = time.perf_counter()
    budget = arena.budgets[TAU_BUDGET]
    measured, bops = [], []
    for i, choice in enumerate(choices):
        policy = policy_of(game, choice)
        measured.append(arena.heldout.evaluate(policy).score)
        bops.append(arena.costs.cost(policy).bops)
        if (i + 1) % 20 == 0:
            clock.log(f"    tau policies: {i + 1}/{len(choices)}")
    out: dict[str, Any] = {
        "model": arena.data.key, "profile": arena.profile.name, "budget": TAU_BUDGET,
        "set": policy_set, "target_bops": budget.bops, "window": cfg.tau_window,
        "min_bits": cfg.models[arena.data.key].tau_min_bits, "policies": len(choices),
        "bootstrap": cfg.bootstrap, "measured": measured, "bops": bops, "predictors": {}}
    for name, (method, seed, table) in tables.items():
        predicted = [float(sum(t[o] for t, o in zip(table, c, strict=True))) for c in choices]
        interval = tau_b_with_ci(predicted, measured, resamples=cfg.bootstrap, seed=0)
        out["predictors"][name] = {"method": method, "seed": seed, "tau": interval.tau,
                                   "low": interval.low, "high": interval.high,
                                   "resamples": interval.resamples, "predicted": predicted}
        clock.log(f"    tau_b {name}: {interval.tau:.3f} "
                  f"[{interval.low:.3f}, {interval.high:.3f}]")
    out["seconds"] = time.perf_counter() - start
    return out


def _background(arena: Arena) -> tuple[Option, dict[str, float]]:
    fp32 = arena.heldout.fp32_score
    scores = {}
    for option in PITFALL_BACKGROUNDS:
        scores[str(option)] = arena.heldout.evaluate(arena.space.uniform(option)).score
        if scores[str(option)] >= 0.5 * fp32:
            return option, scores
    return PITFALL_BACKGROUNDS[-1], scores


def _sampling_error(arena: Arena, score: float) -> float:
    """Binomial standard error of a percent metric at ``score`` on the held-out split."""
    if not arena.data.metric.percent:
        return 0.0
    p = min(max(score, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / len(arena.data.heldout))


def pitfall_analysis(arena: Arena, cfg: Config, rec: Recorder, clock: Clock) -> None:
    game = arena.game
    start = time.perf_counter()
    background_option, background_scores = _background(arena)
    background = [unit.options.index(background_option) for unit in game.units]
    limit = cfg.models[arena.data.key].pitfall_units
    units = list(range(len(game.units)))
    if limit is not None and limit < len(units):
        units = sorted(set(np.linspace(0, len(units) - 1, limit).round().astype(int).tolist()))
    clock.log(f"  {arena.key} alpha pitfall: {len(units)} of {len(game.units)} units around "
              f"uniform {background_option}, measured on the held-out split")
    items = []
    for group in side_groups(game):
        k = game.players[group[0]].unit
        if k not in units:
            continue
        base = game.units[k].options[background[k]]
        options, measured = [], []
        for index in group:
            player = game.players[index]
            if player.side == "w":
                option = Option(player.w_bits, base.a_bits)
            elif player.side == "a":
                option = Option(base.w_bits, player.a_bits)
            else:
                option = Option(player.w_bits, player.a_bits)
            choice = list(background)
            choice[k] = game.units[k].options.index(option)
            options.append(str(option))
            measured.append(arena.heldout.evaluate(policy_of(game, choice)).score)
        items.append({"unit": game.units[k].name, "side": game.players[group[0]].side,
                      "players": group, "options": options, "measured": measured})
    truth = [np.array(item["measured"]) for item in items]
    tolerance = _sampling_error(arena, max(float(t.max()) for t in truth))
    out: dict[str, Any] = {
        "model": arena.data.key, "profile": arena.profile.name,
        "background": f"uniform {background_option}", "background_scores": background_scores,
        "units": len(units), "items": items, "tolerance": tolerance,
        "measured_best_is_most_bits": float(np.mean([t[-1] >= t.max() for t in truth])),
        "measured_all_equal": float(np.mean([np.all(t == t[0]) for t in truth])),
        "predictors": {}}
    scored = [("shapley-paper", seed, phi) for seed, phi in sorted(arena.phi.items())]
    scored += [("dmpq", seed, alpha) for seed, alpha in sorted(arena.dmpq_alpha.items())]
    for method, seed, values in scored:
        scores = [values[np.array(item["players"])] for item in items]
        taus = per_item_tau(scores, truth)
        defined = [t for t in taus if not math.isnan(t)]
        tau_mean = float(np.mean(defined)) if defined else None
        row: dict[str, Any] = {
            "method": method, "seed": seed,
            "disagreement": argmax_disagreement(scores, truth),
            "disagreement_within_noise": argmax_disagreement(scores, truth,
                                                             tolerance=tolerance),
            "tau_mean": tau_mean, "tau_defined": len(defined),
            "argmax_most_bits": float(np.mean([int(np.argmax(s)) == len(s) - 1
                                               for s in scores])),
        }
        out["predictors"][f"{method} seed {seed}"] = row
        clock.log(f"    {method} seed {seed}: argmax misses the measured best on "
                  f"{row['disagreement']:.0%} of {len(items)} unit sides "
                  f"({row['disagreement_within_noise']:.0%} beyond one s.e.), mean tau_b "
                  f"{'undefined' if tau_mean is None else f'{tau_mean:.3f}'}")
    out["seconds"] = time.perf_counter() - start
    rec.add("pitfall", out)
