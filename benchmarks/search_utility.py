"""Which search-split utility ranks policies of one budget by their held-out top-1?

On a Fashion-MNIST model (search on 1000 validation images, held-out top-1 on the 10k test
set, ``flexible`` profile), at the BOPs of one uniform policy: an evolution run on the search
split's top-1 (``--evaluations``) supplies policies that fit the budget, good and bad; the best
``--top`` of them by that top-1 and ``--spread`` drawn at random from the next 1500 are scored
on the search split by top-1, KL to FP32, agreement with FP32 and the label's log-likelihood,
and on the held-out split by top-1. Kendall tau-b and Spearman rho of each utility against the
held-out top-1, over all of them and over the upper half by held-out top-1 (where a search
decides), and the held-out top-1 of each utility's best policy:

    python benchmarks/search_utility.py --model fashion_dsnet --budget w3a4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

sys.path.insert(0, str(Path(__file__).parent))

from harness.core import data_histograms, make_arena
from harness.data import fashion_dsnet, fashion_resnet

from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.engine.metrics import BUILTIN_METRICS
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.options import Option
from smpq_onnx.strategy.evolution import evolution_search

UTILITIES = ("top1", "kl", "agreement", "log_likelihood")


def utilities(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray
              ) -> dict[str, float]:
    """Each utility of one policy's search-split outputs (larger is better)."""
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    log_q = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    scores = {name: BUILTIN_METRICS[name](outputs, reference, labels)
              for name in ("top1", "kl", "agreement")}
    scores["log_likelihood"] = float(np.mean(log_q[np.arange(len(labels)), labels]))
    return scores


def ranks(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    heldout = np.array([r["heldout_top1"] for r in rows])
    found = {}
    for name in UTILITIES:
        values = np.array([r[name] for r in rows])
        found[name] = {"kendall_tau_b": float(kendalltau(values, heldout)[0]),
                       "spearman_rho": float(spearmanr(values, heldout)[0]),
                       "heldout_of_best": float(heldout[int(np.argmax(values))])}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("fashion_resnet", "fashion_dsnet"),
                        default="fashion_dsnet")
    parser.add_argument("--budget", default="w3a4", help="uniform option, e.g. w3a4, w3a8")
    parser.add_argument("--evaluations", type=int, default=1500)
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--spread", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runtime = RuntimeConfig()
    loader = {"fashion_resnet": fashion_resnet, "fashion_dsnet": fashion_dsnet}[args.model]
    data = loader(n_search=1000, n_calib=256, n_test=10000)
    histograms = data_histograms(data, runtime)
    arena = make_arena(data, "flexible", histograms, runtime)
    game, costs = arena.game, arena.costs
    option = Option.parse(args.budget.upper())
    budget = Budget(bops=costs.cost(arena.space.uniform(option)).bops)
    top1 = Evaluator(data.model, arena.search.calibration, data.search, BUILTIN_METRICS["top1"],
                     runtime=runtime, reference=arena.search.reference)
    evolution_search(game, top1, costs, budget, evaluations=args.evaluations, seed=args.seed)
    fitting = sorted((policy for policy in top1.history if budget.fits(costs.cost(policy))),
                     key=lambda p: (-top1.history[p].score, p.sort_key()))
    rng = np.random.default_rng(args.seed)
    rest = fitting[args.top:args.top + 1500]
    picked = fitting[:args.top] + [rest[i] for i in sorted(
        rng.choice(len(rest), size=min(args.spread, len(rest)), replace=False))]
    labels = data.search.labels
    assert labels is not None
    rows = []
    for policy in picked:
        row = utilities(top1.outputs(policy), top1.reference, labels)
        row["heldout_top1"] = arena.heldout.evaluate(policy).score
        rows.append(row)
    median = float(np.median([r["heldout_top1"] for r in rows]))
    upper = [r for r in rows if r["heldout_top1"] > median]
    result = {"model": args.model, "budget": args.budget, "budget_bops": budget.bops,
              "evaluations": args.evaluations, "seed": args.seed, "policies": len(rows),
              "all": ranks(rows), "upper_half": ranks(upper), "splits": data.splits}
    for part in ("all", "upper_half"):
        for name, figures in result[part].items():
            print(f"{part:10s} {name:15s} tau {figures['kendall_tau_b']:.3f} rho "
                  f"{figures['spearman_rho']:.3f} held-out of its best "
                  f"{figures['heldout_of_best']:.4f}")
    out = args.out or (Path(__file__).parent / "results"
                       / f"search_utility_{args.model}_{args.budget}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
