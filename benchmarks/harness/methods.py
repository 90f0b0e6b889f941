"""Every method of ``compare.py`` on one arena: estimate once, then select per budget.

Shapley values (per seed), context and AMP sensitivities do not depend on the budget: they
are computed once and only the selection runs per budget; a method's row counts the
evaluations and time of both (estimation + its own selection). DMPQ's alpha does depend on
the budget (dmpq_search retrains with a larger cd until argmax alpha meets it), so it runs
per budget, loosest first; a tighter budget reuses a looser one's result when that argmax
policy meets it too, because dmpq_search would repeat exactly the same attempts.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from harness.core import (
    Arena,
    Clock,
    Config,
    CountingEvaluator,
    Recorder,
    add_result,
    add_status,
    guarded,
)
from smpq_onnx.api.searching import default_anchor, default_estimator
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.strategy.baselines import (
    amp_select,
    amp_sensitivities,
    context_utilities,
    random_search,
    uniform_search,
)
from smpq_onnx.strategy.evolution import evolution_search
from smpq_onnx.strategy.local import local_search
from smpq_onnx.strategy.smpq import (
    SearchSettings,
    estimate_contributions,
    select,
    sized_settings,
)

TAU_BUDGET = "w4a8_bops"
"""The budget whose DMPQ alpha the analyses use."""


def run_uniform(arena: Arena, rec: Recorder, clock: Clock) -> None:
    """Every uniform option at the highest bit product that fits, the best measured kept."""
    for key in arena.feasible():
        def work(key: str = key) -> None:
            counter = CountingEvaluator(arena.search)
            start = time.perf_counter()
            result = uniform_search(arena.game, counter.typed(), arena.costs,
                                    arena.budgets[key])
            add_result(rec, clock, arena, key, "uniform", None, result.policy, result.score,
                       evaluations=len(counter.asked), estimation_s=0.0,
                       selection_s=time.perf_counter() - start)
        guarded(rec, clock, arena, [key], "uniform", None, work)


def select_per_budget(arena: Arena, rec: Recorder, clock: Clock, method: str, seed: int | None,
                      counter: CountingEvaluator, estimation_s: float,
                      utilities: list[np.ndarray] | None, phi: np.ndarray | None,
                      candidates: int, extra: dict[str, Any] | None = None) -> dict[str, int]:
    """The knapsack selection (best few + uniform guard) for every feasible budget.

    Returns the evaluations (estimation + selection) per budget.
    """
    counts: dict[str, int] = {}
    for key in arena.feasible():
        def work(key: str = key) -> None:
            chooser = counter.fork()
            start = time.perf_counter()
            values = phi if phi is not None else np.zeros(len(arena.game.players))
            policy, score, _ = select(arena.game, arena.costs, arena.budgets[key], values,
                                      chooser.typed(), candidates=candidates,
                                      utilities=utilities)
            counts[key] = len(chooser.asked)
            add_result(rec, clock, arena, key, method, seed, policy, score,
                       evaluations=len(chooser.asked), estimation_s=estimation_s,
                       selection_s=time.perf_counter() - start, extra=extra)
        guarded(rec, clock, arena, [key], method, seed, work)
    return counts


def _ticker(clock: Clock, arena: Arena, what: str) -> Callable[[int], None]:
    return lambda n: clock.log(f"    {arena.key} {what}: {n} evaluations")


def run_context(arena: Arena, rec: Recorder, clock: Clock) -> None:
    def work() -> None:
        counter = CountingEvaluator(arena.search, progress=_ticker(clock, arena, "context"))
        start = time.perf_counter()
        arena.context = context_utilities(arena.game, counter.typed())
        spent = time.perf_counter() - start
        clock.log(f"  {arena.key} context sensitivities: {len(counter.asked)} evaluations, "
                  f"{spent:.1f} s")
        select_per_budget(arena, rec, clock, "context", None, counter, spent, arena.context,
                          None, SearchSettings.candidates)
    guarded(rec, clock, arena, arena.feasible(), "context", None, work)


def run_amp(arena: Arena, cfg: Config, rec: Recorder, clock: Clock) -> None:
    candidates = cfg.amp_candidates(arena.data.key, arena.profile.name)
    extra = {"amp_candidates": sorted(str(o) for o in candidates) if candidates else "all"}

    def work() -> None:
        counter = CountingEvaluator(arena.search, progress=_ticker(clock, arena, "amp"))
        start = time.perf_counter()
        arena.amp_drop = amp_sensitivities(arena.game, counter.typed(), candidates=candidates)
        spent = time.perf_counter() - start
        arena.amp_evaluations = len(counter.asked)
        clock.log(f"  {arena.key} amp sensitivities: {len(counter.asked)} evaluations, "
                  f"{spent:.1f} s")
        for key in arena.feasible():
            def choose(key: str = key) -> None:
                chooser = counter.fork()
                begin = time.perf_counter()
                policy, score = amp_select(arena.game, chooser.typed(), arena.costs,
                                           arena.budgets[key], arena.amp_drop or [])
                add_result(rec, clock, arena, key, "amp", None, policy, score,
                           evaluations=len(chooser.asked), estimation_s=spent,
                           selection_s=time.perf_counter() - begin, extra=extra)
            guarded(rec, clock, arena, [key], "amp", None, choose)
    guarded(rec, clock, arena, arena.feasible(), "amp", None, work)


def run_shapley_paper(arena: Arena, cfg: Config, seed: int, rec: Recorder,
                      clock: Clock) -> None:
    """The paper's game (absent units FP32, ``--game global``): Owen estimate once, knapsack
    per budget."""
    plan = cfg.shapley_plan(arena.data.key, arena.profile.name)
    settings = sized_settings(arena.game, SearchSettings(seed=seed), max_evals=plan.max_evals,
                              samples=plan.samples, rounds=plan.rounds)
    counter = CountingEvaluator(arena.search)

    def progress(_: str, done: int, total: int) -> None:
        clock.log(f"    {arena.key} shapley-paper seed {seed}: sample {done}/{total}, "
                  f"{len(counter.asked)} evaluations")

    def work() -> None:
        start = time.perf_counter()
        phi, stderr, _ = estimate_contributions(arena.game, counter.typed(), settings, progress)
        spent = time.perf_counter() - start
        arena.phi[seed] = phi
        finite = stderr[np.isfinite(stderr)]
        rec.add("estimations", {
            "model": arena.data.key, "profile": arena.profile.name, "method": "shapley-paper",
            "seed": seed, "estimator": settings.estimator, "samples": settings.samples,
            "rounds": settings.rounds, "evaluations": len(counter.asked), "seconds": spent,
            "mean_stderr": float(finite.mean()) if len(finite) else None})
        clock.log(f"  {arena.key} shapley-paper seed {seed}: M={settings.samples} "
                  f"K={settings.rounds}"
                  f", {len(counter.asked)} evaluations, {spent:.1f} s")
        select_per_budget(arena, rec, clock, "shapley-paper", seed, counter, spent, None, phi,
                          settings.candidates,
                          extra={"samples": settings.samples, "rounds": settings.rounds})
    guarded(rec, clock, arena, arena.feasible(), "shapley-paper", seed, work)


def own_count(arena: Arena) -> CountingEvaluator:
    """A counter on a cold search evaluator: a budget-driven search (local, evolution) counts
    and spends only its own evaluations, as ``smpq-onnx search`` would alone."""
    arena.search.forget()
    return CountingEvaluator(arena.search)


def run_shapley(arena: Arena, cfg: Config, seed: int, rec: Recorder,
                clock: Clock) -> dict[str, int]:
    """``smpq-onnx search``'s default (the budget-local game, owen-cv, ceiling table) per
    budget, at ``cfg.shapley_evals`` evaluations (None: AMP's count on this arena); returns
    the evaluations per budget."""
    max_evals = cfg.shapley_evals or arena.amp_evaluations or 1500
    settings = SearchSettings(seed=seed, estimator=default_estimator("local"),
                              anchor=default_anchor("local"), game="local")
    counts: dict[str, int] = {}
    for key in arena.feasible():
        def work(key: str = key) -> None:
            counter = own_count(arena)
            start = time.perf_counter()
            result = local_search(arena.game, counter.typed(), arena.costs,
                                  arena.budgets[key], settings, max_evals=max_evals)
            counts[key] = len(counter.asked)
            if key == TAU_BUDGET and result.phi is not None and result.player_game is not None:
                arena.local_values[seed] = (result.player_game, result.phi)
            add_result(rec, clock, arena, key, "shapley", seed, result.policy, result.score,
                       evaluations=len(counter.asked), estimation_s=0.0,
                       selection_s=time.perf_counter() - start,
                       extra={"max_evals": max_evals, "local": dict(result.details)})
        guarded(rec, clock, arena, [key], "shapley", seed, work)
    return counts


def run_evolution(arena: Arena, cfg: Config, seed: int, shapley_counts: dict[str, int],
                  rec: Recorder, clock: Clock) -> None:
    """The strong reference: regularized evolution with ``cfg.evolution_factor`` x the
    default search's evaluations."""
    for key in arena.feasible():
        target = shapley_counts.get(key)
        if key not in cfg.evolution_budgets:
            add_status(rec, clock, arena, key, "evolution", seed, "skipped",
                       "not among --evolution-budgets")
            continue
        if not target:
            add_status(rec, clock, arena, key, "evolution", seed, "skipped",
                       "no default search of this seed and budget to size it")
            continue

        def work(key: str = key, target: int = target) -> None:
            counter = own_count(arena)
            counter.progress = _ticker(clock, arena, f"{key} evolution seed {seed}")
            counter.every = 500
            start = time.perf_counter()
            result = evolution_search(arena.game, counter.typed(), arena.costs,
                                      arena.budgets[key],
                                      evaluations=cfg.evolution_factor * target, seed=seed)
            add_result(rec, clock, arena, key, "evolution", seed, result.policy, result.score,
                       evaluations=len(counter.asked), estimation_s=0.0,
                       selection_s=time.perf_counter() - start,
                       extra={"evolution_factor": cfg.evolution_factor,
                              "shapley_evaluations": target})
        guarded(rec, clock, arena, [key], "evolution", seed, work)


def run_random(arena: Arena, cfg: Config, seed: int, shapley_counts: dict[str, int],
               rec: Recorder, clock: Clock) -> None:
    """As many random feasible draws as the Shapley run evaluated (or the cap)."""
    cap = cfg.models[arena.data.key].random_cap
    for key in arena.feasible():
        target = shapley_counts.get(key)
        draws = min(target, cap) if target is not None and cap else target or cap
        if not draws:
            add_status(rec, clock, arena, key, "random", seed, "skipped",
                       "no Shapley run of this seed and budget to match its evaluations")
            continue

        def work(key: str = key, draws: int = draws, target: int | None = target) -> None:
            counter = CountingEvaluator(
                arena.search, progress=_ticker(clock, arena, f"{key} random seed {seed}"))
            start = time.perf_counter()
            result = random_search(arena.game, counter.typed(), arena.costs,
                                   arena.budgets[key], evaluations=draws, seed=seed)
            add_result(rec, clock, arena, key, "random", seed, result.policy, result.score,
                       evaluations=len(counter.asked), estimation_s=0.0,
                       selection_s=time.perf_counter() - start,
                       extra={"draws": draws, "shapley_evaluations": target})
        guarded(rec, clock, arena, [key], "random", seed, work)


def _looseness(budget: Budget) -> tuple[float, ...]:
    return tuple(math.inf if v is None else float(v)
                 for v in (budget.bops, budget.weight_bytes, budget.peak_activation_bytes,
                           budget.latency_s))


def _no_looser(budget: Budget, than: Budget) -> bool:
    return all(b <= a for b, a in zip(_looseness(budget), _looseness(than), strict=True))


def run_dmpq(arena: Arena, cfg: Config, seed: int, module: ModuleType, rec: Recorder,
             clock: Clock) -> None:
    plan = cfg.models[arena.data.key]
    settings = module.DmpqSettings(seed=seed)
    if plan.dmpq_epochs is not None:
        settings = dataclasses.replace(settings, epochs=plan.dmpq_epochs)
    calib = arena.data.calib
    if plan.dmpq_images is not None and plan.dmpq_images < len(calib):
        calib = calib.subset(slice(0, plan.dmpq_images), f"{calib.source}[:{plan.dmpq_images}]")
    done: list[tuple[str, Any, int, float]] = []  # (budget key, result, evaluations, seconds)
    attempts: dict[str, int] = {}  # per trained budget, its attempts counted from settings.cd
    order = sorted(arena.feasible(), key=lambda k: _looseness(arena.budgets[k]), reverse=True)
    for key in order:
        budget = arena.budgets[key]

        def work(key: str = key, budget: Budget = budget) -> None:
            reuse = next((d for d in done if d[1].details.get("selection") == "argmax"
                          and _no_looser(budget, arena.budgets[d[0]])
                          and budget.fits(d[1].costs)), None)
            if reuse is not None:
                source, result, evaluations, spent = reuse
                note = f"same training as {source}: its argmax policy meets this budget too"
            else:
                counter = CountingEvaluator(arena.search)
                start = time.perf_counter()
                resumed, before, note = _continued_doubling(settings, budget, arena, done,
                                                            attempts)
                result = module.dmpq_search(arena.game, counter.typed(), arena.costs, budget,
                                            calib_data=calib, settings=resumed)
                spent, evaluations = time.perf_counter() - start, len(counter.asked)
                attempts[key] = before + int(result.details["attempts"])
                done.append((key, result, evaluations, spent))
            if key == TAU_BUDGET or seed not in arena.dmpq_alpha:
                arena.dmpq_alpha[seed] = np.asarray(result.alpha, dtype=float)
            add_result(rec, clock, arena, key, "dmpq", seed, result.policy, result.score,
                       evaluations=evaluations, estimation_s=spent, selection_s=0.0,
                       extra={"dmpq": dict(result.details), "dmpq_note": note,
                              "dmpq_attempts_from_start": attempts.get(key),
                              "dmpq_epochs": settings.epochs, "dmpq_images": len(calib)})
        guarded(rec, clock, arena, [key], "dmpq", seed, work)


def _continued_doubling(settings: Any, budget: Budget, arena: Arena,
                        done: list[tuple[str, Any, int, float]], attempts: dict[str, int]
                        ) -> tuple[Any, int, str]:
    """DMPQ settings that skip the cd attempts a looser budget already showed to fail here,
    with how many attempts (counted from ``settings.cd``) they skip, and a note.

    Each attempt trains afresh from the same seed, so an attempt's argmax policy depends on
    its cd alone: every cd below a looser budget's final one missed that budget, hence this
    one too, and so did its final argmax (else that policy would have been reused). Doubling
    on from there, with the attempts left, gives the policy that doubling from the start
    would, without training those attempts again."""
    looser = [d for d in done if _no_looser(budget, arena.budgets[d[0]])]
    if not looser:
        return settings, 0, "trained for this budget"
    source, result, _, _ = max(looser, key=lambda d: d[1].details["cd"])
    cd, made = float(result.details["cd"]), attempts[source]
    if made <= settings.retries:  # the next cd, with the attempts left
        resumed = dataclasses.replace(settings, cd=cd * settings.cd_growth,
                                      retries=settings.retries - made)
    else:  # none left: the last attempt again, for the knapsack fallback on its alpha
        resumed, made = dataclasses.replace(settings, cd=cd, retries=0), made - 1
    return resumed, made, (f"trained for this budget from cd {resumed.cd:g}, where "
                           f"{source}'s doubling from cd {settings.cd:g} stopped")
