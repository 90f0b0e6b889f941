"""Does measured refinement close the gap to AMP at equal evaluations? A first measurement.

On the bundled Fashion-MNIST ResNet (search on 1000 validation images, top-1 of the chosen
policy's emitted model on the 10k test set, as ``compare.py`` does), ``flexible`` profile,
BOPs budgets of uniform W4A4 (0.25x W8A8) and W3A4 (0.1875x), each method given AMP's own
number of evaluations on that budget:

- ``amp``: AIMET's post-training mixed precision (its evaluation count sets everyone's);
- ``shapley``: the default search sized to that count;
- ``shapley+refine``: the default search sized to (1 - share) of it, the rest spent on a
  hill climb from its selection (``--refine-share``);
- ``evolution`` and ``random`` with the same count.

    python benchmarks/refinement.py [--seeds 2] [--share 0.4] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from harness.core import Arena, data_histograms, make_arena
from harness.data import fashion_resnet

from smpq_onnx.hardware.budget import Budget
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.options import Option
from smpq_onnx.strategy.baselines import amp_search, random_search
from smpq_onnx.strategy.evolution import evolution_search
from smpq_onnx.strategy.refine import refined
from smpq_onnx.strategy.smpq import SearchResult, SearchSettings, shapley_search, sized_settings

BUDGETS = (("w4a4_bops", Option(4, 4)), ("w3a4_bops", Option(3, 4)))
METHODS = ("amp", "shapley", "shapley+refine", "evolution", "random")


def run(name: str, arena: Arena, budget: Budget, seed: int, count: int,
        share: float) -> SearchResult:
    """One method on ``budget``; all but amp get ``count`` evaluations."""
    game, costs, evaluator = arena.game, arena.costs, arena.search
    if name == "amp":
        return amp_search(game, evaluator, costs, budget)
    if name == "evolution":
        return evolution_search(game, evaluator, costs, budget, evaluations=count, seed=seed)
    if name == "random":
        return random_search(game, evaluator, costs, budget, evaluations=count, seed=seed)
    before = evaluator.n_evaluations
    evals = count if name == "shapley" else round(count * (1 - share))
    settings = sized_settings(game, SearchSettings(seed=seed), max_evals=evals)
    result = shapley_search(game, evaluator, costs, budget, settings)
    if name == "shapley":
        return result
    return refined(result, evaluator, costs, budget,
                   evaluations=count - (evaluator.n_evaluations - before), seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--share", type=float, default=0.4)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "refinement.json")
    args = parser.parse_args()
    runtime = RuntimeConfig()
    data = fashion_resnet(n_search=1000, n_calib=256, n_test=10000)
    histograms = data_histograms(data, runtime)
    arena = make_arena(data, "flexible", histograms, runtime)
    costs, evaluator = arena.costs, arena.search
    rows: list[dict[str, Any]] = []
    for key, option in BUDGETS:
        budget = Budget(bops=costs.cost(arena.space.uniform(option)).bops)
        for seed in range(args.seeds):
            count = 0
            for name in METHODS:
                evaluator.forget()  # every method starts cold: the count is its own
                before, start = evaluator.n_evaluations, time.perf_counter()
                result = run(name, arena, budget, seed, count, args.share)
                spent = evaluator.n_evaluations - before
                count = count or spent  # amp runs first and sets everyone's count
                row = {"method": name, "budget": key, "seed": seed,
                       "search": result.score, "bops": result.costs.bops,
                       "budget_bops": budget.bops, "evaluations": spent,
                       "heldout": arena.heldout.evaluate_deployed(result.policy).score,
                       "details": {k: v for k, v in result.details.items()
                                   if k.startswith("refine")},
                       "wall_s": round(time.perf_counter() - start, 1)}
                rows.append(row)
                print(f"{key} seed {seed} {name:15s} held-out {row['heldout']:.4f} "
                      f"search {row['search']:.4f} ({spent} evaluations) {row['details']}",
                      flush=True)
    summary = {}
    for key, _ in BUDGETS:
        for name in METHODS:
            scores = [r["heldout"] for r in rows if r["budget"] == key and r["method"] == name]
            summary[f"{key} {name}"] = {"mean": statistics.fmean(scores),
                                        "stdev": statistics.stdev(scores)
                                        if len(scores) > 1 else 0.0}
            print(f"{key} {name:15s} held-out {summary[f'{key} {name}']['mean']:.4f} "
                  f"+- {summary[f'{key} {name}']['stdev']:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "summary": summary, "share": args.share},
                                   indent=1) + "\n")


if __name__ == "__main__":
    main()
