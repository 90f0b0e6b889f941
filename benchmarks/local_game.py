"""Does the budget-local game beat the paper's game and AMP at AMP's evaluation count?

On the bundled Fashion-MNIST ResNet (search on 1000 validation images, top-1 of the chosen
policy's emitted model on the 10k test set, as ``compare.py`` does), ``flexible`` profile,
BOPs budgets of uniform W4A8, W3A8, W4A4 and W3A4 (0.5, 0.375, 0.25 and 0.1875x W8A8):

- ``amp``: AIMET's post-training mixed precision, run first (deterministic, one seed): its
  evaluation count is everyone's ``--max-evals``;
- ``global``: SMPQ on the paper's game (absent units FP32) sized to that count;
- ``local``: SMPQ on the budget-local game (:mod:`smpq_onnx.strategy.local`), same count;
  ``local-nopolish`` without its joint polish; ``local+refine`` sized to (1 -
  ``--refine-share``) of the count, the rest spent on a hill climb (``--refine-share``);
- ``random``: random feasible policies, same count (``--with-random``);
- ``evolution``: regularized evolution with ``--evolution-factor`` times the evaluations the
  local search of the same seed spent (listed after ``local`` in ``--methods``): the strong
  reference.

MobileNetV2 (ImageNet weights, agreement with FP32 on natural crops held out from the search)
on the ``npu`` profile at fractions of its W8A8 BOPs, the issue's headline scenario:

    python benchmarks/local_game.py [--seeds 2] [--budgets w4a4,w3a4] [--out FILE]
    python benchmarks/local_game.py --model mobilenet_v2 --hw npu --budgets 0.75,0.6
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from harness.core import Arena, data_histograms, heldout_scores, make_arena
from harness.data import fashion_dsnet, fashion_resnet, mobilenet_v2

from smpq_onnx.api.searching import default_anchor, default_estimator
from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.engine.metrics import BUILTIN_METRICS
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.options import Option
from smpq_onnx.strategy import local, start
from smpq_onnx.strategy.baselines import amp_search, random_search
from smpq_onnx.strategy.evolution import evolution_search
from smpq_onnx.strategy.local import local_search
from smpq_onnx.strategy.refine import refined
from smpq_onnx.strategy.smpq import SearchResult, SearchSettings, shapley_search, sized_settings

BUDGETS = {"w4a8": Option(4, 8), "w3a8": Option(3, 8), "w4a4": Option(4, 4),
           "w3a4": Option(3, 4)}


def run(name: str, arena: Arena, budget: Budget, seed: int, count: int,
        local_settings: SearchSettings, radius: int, most_bits_start: bool,
        windows: int | None = None, refine_share: float = 0.3,
        sensitivity: str = "off") -> SearchResult:
    game, costs, evaluator = arena.game, arena.costs, arena.search
    if name == "amp":
        return amp_search(game, evaluator, costs, budget)
    if name == "random":
        return random_search(game, evaluator, costs, budget, evaluations=count, seed=seed)
    if name == "evolution":
        return evolution_search(game, evaluator, costs, budget, evaluations=count, seed=seed)
    if name == "local+refine":  # the local search on part of the count, a hill climb after
        before = evaluator.n_evaluations
        searched = run("local", arena, budget, seed, round(count * (1 - refine_share)),
                       local_settings, radius, most_bits_start, windows,
                       sensitivity=sensitivity)
        left = count - (evaluator.n_evaluations - before)
        return refined(searched, evaluator, costs, budget, evaluations=max(left, 0), seed=seed)
    if name in ("local", "local-nopolish"):
        return local_search(game, evaluator, costs, budget,
                            dataclasses.replace(local_settings, seed=seed), max_evals=count,
                            radius=radius, most_bits_start=most_bits_start, windows=windows,
                            sensitivity_start=sensitivity == "start",
                            sensitivity_candidates=sensitivity == "candidates",
                            polish=name == "local")
    settings = sized_settings(game, SearchSettings(seed=seed), max_evals=count)
    return shapley_search(game, evaluator, costs, budget, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--budgets", default=",".join(BUDGETS))
    parser.add_argument("--with-random", action="store_true")
    parser.add_argument("--methods", default="global,local",
                        help="besides amp (which sets the count unless --count is given)")
    parser.add_argument("--count", type=int, help="evaluations of every method (skips amp)")
    parser.add_argument("--evolution-factor", type=int, default=10,
                        help="method evolution (the strong reference) gets this many times "
                        "the evaluations the local search of the same seed spent")
    parser.add_argument("--measured-candidates", type=int,
                        help="override local.MEASURED_CANDIDATES (best measured coalitions "
                        "among the final candidates)")
    parser.add_argument("--interactions", type=int, default=0,
                        help="the local search's measured pair terms (units per window)")
    parser.add_argument("--surrogate", type=int, default=SearchSettings.surrogate,
                        help="the local search's surrogate proposals (0: none)")
    parser.add_argument("--windows", type=int,
                        help="the local search's windows (default: sized to the count, at most "
                        "local.MAX_MOVES)")
    parser.add_argument("--radius", type=int, default=1,
                        help="the local search's window radius (steps either side)")
    parser.add_argument("--uniform-start", action="store_true",
                        help="the local search's first centre from the uniform policies only")
    parser.add_argument("--joint-rounds", type=int, default=None,
                        help="--sensitivity-start: rounds of joint cells (0: the side sums "
                             "alone; default start.JOINT_ROUNDS)")
    parser.add_argument("--sensitivity-candidates", action="store_true",
                        help="the sensitivity knapsack's policies measured as final candidates "
                             "only (the first centre as without them)")
    parser.add_argument("--sensitivity-start", action="store_true",
                        help="the local search's first centre also from the knapsack on side "
                        "sensitivities (local.SENSITIVITY_SHARE_LIMIT)")
    parser.add_argument("--model", choices=("fashion_resnet", "fashion_dsnet", "mobilenet_v2"),
                        default="fashion_resnet")
    parser.add_argument("--hw", default="flexible")
    parser.add_argument("--search-offset", type=int, default=0,
                        help="Fashion-MNIST: the search split's first validation image (the "
                        "same methods on another 1000 images: how much a verdict owes to the "
                        "search split drawn)")
    parser.add_argument("--search-crops", type=int, default=64)
    parser.add_argument("--heldout-crops", type=int, default=256)
    parser.add_argument("--estimator", default=default_estimator("local"),
                        help="the local search's estimator (default: smpq-onnx search's)")
    parser.add_argument("--anchor", default=default_anchor("local"),
                        help="where owen-cv's single-side table is measured (floor, ceiling)")
    parser.add_argument("--search-metric", choices=sorted(BUILTIN_METRICS),
                        help="the search's utility (default: smpq-onnx search's, kl, also with "
                        "labels); held-out scores keep the model's metric")
    parser.add_argument("--refine-share", type=float, default=0.3,
                        help="local+refine: share of the count left to the hill climb")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "local_game.json")
    args = parser.parse_args()
    if args.sensitivity_start and args.sensitivity_candidates:
        parser.error("--sensitivity-start and --sensitivity-candidates: choose one")
    sensitivity = ("start" if args.sensitivity_start else
                   "candidates" if args.sensitivity_candidates else "off")
    if args.measured_candidates is not None:
        local.MEASURED_CANDIDATES = args.measured_candidates
    if args.joint_rounds is not None:
        start.JOINT_ROUNDS = args.joint_rounds
    runtime = RuntimeConfig()
    fashion = {"fashion_resnet": fashion_resnet, "fashion_dsnet": fashion_dsnet}
    data = (fashion[args.model](n_search=1000, n_calib=256, n_test=10000,
                                search_offset=args.search_offset)
            if args.model in fashion else
            mobilenet_v2(n_search=args.search_crops, n_heldout=args.heldout_crops, n_calib=64))
    histograms = data_histograms(data, runtime)
    arena = make_arena(data, args.hw, histograms, runtime)
    if args.search_metric:  # make_arena's default: smpq-onnx search's utility
        arena.search = Evaluator(data.model, arena.search.calibration, data.search,
                                 BUILTIN_METRICS[args.search_metric], runtime=runtime)
    costs, evaluator = arena.costs, arena.search
    local_settings = SearchSettings(estimator=args.estimator, anchor=args.anchor,
                                    interactions=args.interactions,
                                    surrogate=args.surrogate)
    methods = [*args.methods.split(","), *(["random"] if args.with_random else [])]
    rows: list[dict[str, Any]] = []

    def record(name: str, key: str, seed: int | None, count: int) -> int:
        evaluator.forget()  # every method starts cold: the count is its own
        before, began = evaluator.n_evaluations, time.perf_counter()
        result = run(name, arena, budget, seed or 0, count, local_settings, args.radius,
                     not args.uniform_start, args.windows, args.refine_share,
                     sensitivity)
        spent = evaluator.n_evaluations - before
        scored = heldout_scores(arena.heldout, result.policy)
        row = {"method": name, "budget": key, "seed": seed, "search": result.score,
               "bops": result.costs.bops, "budget_bops": budget.bops, "evaluations": spent,
               "heldout": scored.metric, "heldout_utility": scored.utility,
               "details": result.details, "wall_s": round(time.perf_counter() - began, 1),
               "policy": {layer: str(o) for layer, o in result.policy.items()}}
        rows.append(row)
        print(f"{key} seed {seed} {name:8s} held-out {row['heldout']:.4f} "
              f"(KL {row['heldout_utility']:.5f}) search "
              f"{row['search']:.4f} ({spent} evaluations, {row['wall_s']} s) {row['details']}",
              flush=True)
        return spent

    keys = args.budgets.split(",")
    for key in keys:
        option = BUDGETS.get(key)
        budget = Budget(bops=costs.cost(arena.space.uniform(option)).bops if option else
                        int(float(key) * costs.cost(arena.space.uniform(Option(8, 8))).bops))
        count = args.count or record("amp", key, None, 0)
        for seed in range(args.seeds):
            spent = count
            for name in methods:
                given = args.evolution_factor * spent if name == "evolution" else count
                used = record(name, key, seed, given)
                spent = used if name == "local" else spent
    summary = {}
    for key in keys:
        for name in [*([] if args.count else ["amp"]), *methods]:
            scores = [r["heldout"] for r in rows if r["budget"] == key and r["method"] == name]
            summary[f"{key} {name}"] = {
                "mean": statistics.fmean(scores), "min": min(scores),
                "stdev": statistics.stdev(scores) if len(scores) > 1 else 0.0}
            print(f"{key} {name:8s} held-out {summary[f'{key} {name}']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "hw": args.hw,
                                    "search_metric": evaluator.metric.name,
                                    "local_settings": dataclasses.asdict(local_settings),
                                    "sensitivity_start": args.sensitivity_start,
                                    "sensitivity_candidates": args.sensitivity_candidates,
                                    "joint_rounds": start.JOINT_ROUNDS,
                                    "windows": args.windows,
                                    "rows": rows,
                                    "measured_candidates": local.MEASURED_CANDIDATES,
                                    "summary": summary, "splits": data.splits}, indent=1)
                        + "\n")


if __name__ == "__main__":
    main()
