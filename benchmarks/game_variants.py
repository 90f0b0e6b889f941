"""Which game should SMPQ play? Reference precision and coalition semantics, measured.

On the Fashion-MNIST ResNet (search on 1000 validation images, top-1 of the chosen policy on
the 10k test set, as ``compare.py`` does), ``flexible`` profile, BOPs budgets of uniform W4A8
and W3A4, the default Owen estimator sized to ``--max-evals`` evaluations, several seeds:

- ``hard/FP32``: the default game (absent layers in float, hard choice among present options);
- ``hard/W8A8``: absent layers at W8A8 (``--reference W8A8``), closer to a deployed network;
- ``mix/FP32``: the paper's softmax(alpha) mixtures (``--semantics mix``);
- ``hard/FP32/owen-cv``: the default game, Owen sampling with the separable control variate.

    python benchmarks/game_variants.py [--seeds 3] [--max-evals 300] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness.core import data_histograms, make_arena
from harness.data import fashion_resnet

from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.options import FP32, Option
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.smpq import SearchSettings, shapley_search, sized_settings

VARIANTS = {"hard/FP32": ("hard", FP32, "owen"), "hard/W8A8": ("hard", Option(8, 8), "owen"),
            "mix/FP32": ("mix", FP32, "owen"), "hard/FP32/owen-cv": ("hard", FP32, "owen-cv")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-evals", type=int, default=300)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "game_variants.json")
    args = parser.parse_args()
    runtime = RuntimeConfig()
    data = fashion_resnet(n_search=1000, n_calib=256, n_test=10000)
    histograms = data_histograms(data, runtime)
    arena = make_arena(data, "flexible", histograms, runtime)
    rows = []
    for name in args.variants.split(","):
        semantics, reference, estimator = VARIANTS[name]
        game = QuantizationGame(arena.space, reference=reference, semantics=semantics)
        for budget_key, budget in arena.budgets.items():
            for seed in range(args.seeds):
                before = arena.search.n_evaluations
                start = time.perf_counter()
                settings = sized_settings(
                    game, SearchSettings(seed=seed, semantics=semantics, estimator=estimator,
                                         reference=str(reference)), max_evals=args.max_evals)
                result = shapley_search(game, arena.search, arena.costs, budget, settings)
                row = {"variant": name, "budget": budget_key, "seed": seed,
                       "search": result.score,
                       "heldout": arena.heldout.evaluate_deployed(result.policy).score,
                       "bops": result.costs.bops, "budget_bops": budget.bops,
                       "evaluations": arena.search.n_evaluations - before,
                       "wall_s": time.perf_counter() - start}
                rows.append(row)
                print(f"{name:10s} {budget_key:10s} seed {seed}: search {row['search']:.4f} "
                      f"held-out {row['heldout']:.4f} ({row['evaluations']} evaluations, "
                      f"{row['wall_s']:.0f} s)", flush=True)
    summary = {}
    for name in args.variants.split(","):
        for budget_key in arena.budgets:
            scores = [r["heldout"] for r in rows
                      if r["variant"] == name and r["budget"] == budget_key]
            summary[f"{name} {budget_key}"] = {
                "heldout_mean": statistics.fmean(scores),
                "heldout_stdev": statistics.stdev(scores) if len(scores) > 1 else 0.0}
    for key, value in summary.items():
        print(f"{key:24s} held-out top-1 {value['heldout_mean']:.4f} "
              f"+- {value['heldout_stdev']:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "summary": summary,
                                    "max_evals": args.max_evals}, indent=2) + "\n")


if __name__ == "__main__":
    main()
