"""Can the search split tell the policies of one budget apart? Paired tests on both splits.

For each policy ``compare.py`` chose at one budget (read from its JSON), the emitted model's
per-image correctness against a reference policy's (uniform by default), on the search split
and on the held-out test set: the difference in top-1, the discordant images (right with one
policy and wrong with the other, each way) and the exact McNemar p-value (a two-sided
binomial test on the discordant images). A gain that the search split cannot resolve is one
no method choosing on it can find except by chance.

    python benchmarks/paired_heldout.py --model fashion_resnet --budget w3a8_bops
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from harness.core import data_histograms, make_arena
from harness.data import fashion_dsnet, fashion_resnet
from scipy.stats import binomtest

from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.model.runtime import RuntimeConfig
from smpq_onnx.quant.options import Option
from smpq_onnx.quant.policy import Policy

RESULTS = Path(__file__).parent / "results"


def correct(evaluator: Evaluator, policy: Policy) -> np.ndarray:
    """Per image, whether the emitted model of ``policy`` is right."""
    outputs = evaluator.run_model(evaluator.deployed_model(policy).SerializeToString())
    labels = evaluator.data.labels
    assert labels is not None
    return np.asarray(outputs.argmax(axis=1) == labels)


def paired(challenger: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    up = int((challenger & ~reference).sum())
    down = int((~challenger & reference).sum())
    return {"difference_pt": 100.0 * float(challenger.mean() - reference.mean()),
            "discordant_up": up, "discordant_down": down,
            "mcnemar_p": binomtest(up, up + down, 0.5).pvalue if up + down else 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", choices=("fashion_resnet", "fashion_dsnet"),
                        default="fashion_resnet")
    parser.add_argument("--profile", default="flexible")
    parser.add_argument("--budget", default="w3a8_bops")
    parser.add_argument("--reference", default="uniform", help="the method compared against")
    parser.add_argument("--results", type=Path, default=RESULTS / "compare.json")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = [r for r in json.loads(args.results.read_text())["results"]
            if (r["model"], r["profile"], r["budget"], r["status"])
            == (args.model, args.profile, args.budget, "ok")]
    if not rows:
        raise SystemExit(f"no rows of {args.model}/{args.profile}/{args.budget} in "
                         f"{args.results}; run benchmarks/compare.py first")
    data = {"fashion_resnet": fashion_resnet, "fashion_dsnet": fashion_dsnet}[args.model](
        n_search=1000, n_calib=256, n_test=10000)
    runtime = RuntimeConfig()
    histograms = data_histograms(data, runtime)
    arena = make_arena(data, args.profile, histograms, runtime)

    def policy(row: dict[str, Any]) -> Policy:
        return Policy({name: Option.parse(text) for name, text in row["policy"].items()})

    reference = policy(next(r for r in rows if r["method"] == args.reference))
    splits = {"search": arena.search, "heldout": arena.heldout}
    base = {name: correct(evaluator, reference) for name, evaluator in splits.items()}
    out = []
    for row in rows:
        if row["method"] == args.reference:
            continue
        chosen = policy(row)
        line = {"method": row["method"], "seed": row["seed"],
                **{name: paired(correct(evaluator, chosen), base[name])
                   for name, evaluator in splits.items()}}
        out.append(line)
        print(f"{row['method']:14s} seed {row['seed']}: " + "; ".join(
            f"{name} {s['difference_pt']:+.2f} pt ({s['discordant_up']} up, "
            f"{s['discordant_down']} down, p {s['mcnemar_p']:.3f})"
            for name, s in ((n, line[n]) for n in splits)), flush=True)
    target = args.out or RESULTS / f"paired_{args.model}_{args.budget}.json"
    target.write_text(json.dumps({"model": args.model, "profile": args.profile,
                                  "budget": args.budget, "reference": args.reference,
                                  "source": str(args.results.name), "splits": data.splits,
                                  "rows": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
