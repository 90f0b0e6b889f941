"""The search report: one JSON object (report.json, --json) and its markdown summary."""

from __future__ import annotations

import itertools
import platform
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from smpq_onnx._version import __version__
from smpq_onnx.hardware.budget import W8A8_BITS, Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.strategy.smpq import SearchResult, SearchSettings


def build_report(result: SearchResult, *, method: str, model: str, profile: str, metric: str,
                 budget: Budget, costs: CostModel, settings: SearchSettings,
                 evaluations: int, resumed: int, deployed_evaluations: int,
                 history: list[dict[str, Any]],
                 phases: dict[str, float], n_eval: int, provider: str,
                 rounding: dict[str, Any] | None = None) -> dict[str, Any]:
    game = result.played
    contributions = []
    for i, player in enumerate(game.players if result.phi is not None else ()):
        contributions.append({"unit": game.unit_names[player.unit], "side": player.side,
                              "w_bits": player.w_bits, "a_bits": player.a_bits,
                              "phi": float(result.phi[i]),  # type: ignore[index]
                              "stderr": _finite(result.stderr[i]),  # type: ignore[index]
                              "alpha": float(result.alpha[i])})  # type: ignore[index]
    layers = []
    for layer in costs.model.layers:
        option = result.policy[layer.name]
        layers.append({"name": layer.name, "op_type": layer.op_type, "w_bits": option.w_bits,
                       "a_bits": option.a_bits, "macs": layer.macs,
                       "bops": costs.layer_bops(layer.name, option),
                       "weight_bytes": costs.layer_weight_bytes(layer.name, option)})
    return {
        "model": model, "profile": profile, "metric": metric, "eval_samples": n_eval,
        "input_shapes": {name: list(dims) for name, dims in costs.model.input_shapes.items()},
        "float_subgraph_layers": list(costs.model.float_subgraph_layers),
        "fp32": result.fp32_score, "final": result.score,
        "final_engine": "emitted QDQ model",
        "final_fast_engine": result.details.get("fast_engine_score"),
        "policy": result.policy.to_json_dict(),
        "costs": result.costs.to_json_dict(),
        "budget": [{"resource": line.resource, "used": line.used, "limit": line.limit,
                    "fits": line.fits} for line in budget.check(result.costs)],
        "w8a8_bops": costs.model.total_macs * W8A8_BITS,
        "layers": layers,
        "contributions": contributions,
        "candidates": [{"policy": p.to_json_dict(), "score": s, "bops": costs.cost(p).bops,
                        "uniform": len(set(p.values())) == 1}
                       for p, s in result.candidates],
        "evaluations": evaluations, "resumed_evaluations": resumed,
        "deployed_evaluations": deployed_evaluations,
        "evaluated_policies": history,
        "phases_s": phases,
        "method_details": dict(result.details),
        "pinned": {name: str(unit.options[0]) for unit in game.units if unit.pinned
                   for name in unit.layers},
        "evaluation_spend": evaluation_spend(history, budget.bops),
        "settings": {"method": method, **{k: list(v) if isinstance(v, tuple) else v
                                          for k, v in settings.__dict__.items()}},
        "seed": settings.seed,
        "versions": {"smpq_onnx": __version__, "onnx": onnx.__version__,
                     "onnxruntime": ort.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "provider": provider,
        "rounding": rounding or {"method": "nearest", "bias_correction": False},
    }


def in_reported_metric(report: dict[str, Any], metric: str, *, fp32: float, final: float,
                       final_fast_engine: float) -> dict[str, Any]:
    """``report`` headed by ``metric`` (what the user reads, e.g. top-1) where the search
    maximized another utility; the utility's scores move under ``search_utility``, and the
    candidates, contributions and evaluated policies stay in its units."""
    utility = {key: report[key] for key in ("metric", "fp32", "final", "final_fast_engine")}
    return {**report, "metric": metric, "fp32": fp32, "final": final,
            "final_fast_engine": final_fast_engine, "search_utility": utility}


def utility_of(report: dict[str, Any]) -> dict[str, Any]:
    """The metric, FP32 and final scores in the units the search measured (its candidates,
    contributions and evaluated policies)."""
    return report.get("search_utility") or report


SPEND_EDGES = (1.0, 1.5, 3.0, 10.0)
"""Upper edges of the BOPs-over-budget ratios the evaluated policies are counted in."""


def evaluation_spend(history: list[dict[str, Any]], budget_bops: int | None
                     ) -> dict[str, Any] | None:
    """Where the evaluations went: how many evaluated policies had BOPs within 1x, 1.5x, 3x,
    10x and beyond the BOPs budget, and the median ratio (None without a BOPs budget)."""
    if not budget_bops or not history:
        return None
    ratios = np.array([h["bops"] / budget_bops for h in history], dtype=float)
    edges = (-np.inf, *SPEND_EDGES, np.inf)
    bins = {(f"<= {hi:g}x" if np.isfinite(hi) else f"> {lo:g}x"):
            int(((ratios > lo) & (ratios <= hi)).sum()) for lo, hi in itertools.pairwise(edges)}
    return {"budget_bops": int(budget_bops), "policies": len(ratios),
            "median_ratio": float(np.median(ratios)), "by_ratio": bins}


def _finite(value: float) -> float | None:
    """None for an unknown (infinite) standard error, so the report stays strict JSON."""
    return float(value) if np.isfinite(value) else None


def markdown(report: dict[str, Any], *, percent: bool) -> str:
    scale, unit = (100.0, " %") if percent else (1.0, "")
    lines = [
        f"# smpq-onnx search: {report['model']}",
        "",
        f"Method `{report['settings']['method']}`, profile `{report['profile']}`, metric "
        f"`{report['metric']}` on {report['eval_samples']} samples, seed {report['seed']}.",
        "",
        *([f"Searched on `{utility_of(report)['metric']}` (chosen "
           f"{utility_of(report)['final']:.6g}, FP32 {utility_of(report)['fp32'] + 0.0:.6g}): "
           "candidates, contributions and `metric_vs_bops.png` are in its units.", ""]
          if report.get("search_utility") else []),
        "| | value |", "|---|---|",
        f"| FP32 | {report['fp32'] * scale:.4f}{unit} |",
        f"| chosen policy (emitted QDQ model) | {report['final'] * scale:.4f}{unit} |",
        *([f"| chosen policy (fake-quant engine of the search) | "
           f"{report['final_fast_engine'] * scale:.4f}{unit} |"]
          if report.get("final_fast_engine") is not None else []),
        f"| real evaluations | {report['evaluations']} (+{report['resumed_evaluations']} "
        f"resumed; {report['deployed_evaluations']} of emitted models) |",
        f"| wall time | {sum(report['phases_s'].values()):.1f} s |",
        *([f"| weight rounding | {report['rounding']['method']}"
           f"{' + bias correction' if report['rounding']['bias_correction'] else ''} |"]
          if report.get("rounding") else []),
        "",
        "## Budgets", "",
        *([f"Costs are per sample at input shape(s) {_shapes_text(report['input_shapes'])}.",
           ""] if report.get("input_shapes") else []),
        *([f"Layers inside If/Loop/Scan bodies, carried through in float: "
           f"{', '.join(report['float_subgraph_layers'])}.", ""]
          if report.get("float_subgraph_layers") else []),
        "| resource | used | limit | fits |", "|---|---|---|---|",
    ]
    lines += [f"| {b['resource']} | {b['used']:.6g} | {b['limit']:.6g} | "
              f"{'yes' if b['fits'] else 'NO'} |" for b in report["budget"]]
    lines += ["", "## Policy", "", "| layer | op | W | A | MACs | BOPs | weight bytes |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {la['name']} | {la['op_type']} | {la['w_bits']} | {la['a_bits']} | "
              f"{la['macs']} | {la['bops']} | {la['weight_bytes']} |" for la in report["layers"]]
    if report.get("pinned"):
        lines += ["", f"Pinned (not searched): {len(report['pinned'])} layer(s), "
                  + ", ".join(f"{k} {v}" for k, v in report["pinned"].items()) + "."]
    spend = report.get("evaluation_spend")
    if spend:
        lines += ["", "## Where the evaluations went", "",
                  f"BOPs of the {spend['policies']} evaluated policies over the budget "
                  f"({spend['budget_bops']}); median {spend['median_ratio']:.2f}x.", "",
                  "| BOPs / budget | policies |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in spend["by_ratio"].items()]
    lines += ["", "## Candidates evaluated at selection", "", "| # | source | score | BOPs |",
              "|---|---|---|---|"]
    if report.get("search_utility"):
        scale, unit = 1.0, ""
    lines += [f"| {i + 1} | {'uniform' if c['uniform'] else 'mixed'} | "
              f"{c['score'] * scale:.4f}{unit} | {c['bops']} |"
              for i, c in enumerate(report["candidates"])]
    if report.get("method_details"):
        lines += ["", "## Method details", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in report["method_details"].items()]
    lines += ["", "## Time per phase", "", "| phase | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report["phases_s"].items()]
    if report["contributions"]:
        lines += ["", "## Contributions (Shapley value ± standard error)", "",
                  "| unit | player | phi | stderr |", "|---|---|---|---|"]
    for c in report["contributions"]:
        player = {"w": f"W{c['w_bits']}", "a": f"A{c['a_bits']}",
                  "wa": f"W{c['w_bits']}A{c['a_bits']}"}[c["side"]]
        stderr = "n/a" if c["stderr"] is None else f"{c['stderr']:.5f}"
        lines.append(f"| {c['unit']} | {player} | {c['phi']:.5f} | {stderr} |")
    lines += ["", "Plots: `bits_per_layer.png`, `metric_vs_bops.png`"
              + (", `contributions.png`." if report["contributions"] else "."), ""]
    return "\n".join(lines)


def _shapes_text(shapes: dict[str, list[int]]) -> str:
    return ", ".join(f"`{name}` {'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())
