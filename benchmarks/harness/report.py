"""RESULTS.md and the metric-vs-BOPs plot, generated from ``compare.json`` alone.

Every number in RESULTS.md comes from the JSON of one ``compare.py`` run; the verdict lines
are computed from those numbers. Rerender without rerunning:

    python benchmarks/compare.py --render-only [--out benchmarks/results/compare.json]
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from harness.ranking import mean_std

RESULTS_DIR = Path(__file__).parents[1] / "results"
METHOD_ORDER = ("shapley", "shapley-paper", "uniform", "random", "context", "amp", "dmpq",
                "evolution")
REFERENCE = "evolution"
"""Not a baseline to beat: the strong reference with 10x the evaluations (within 0.2 pt)."""
REFERENCE_GAP = 0.002
PAIRED_Z = 2.0
"""A difference counts as inside the noise within this many paired standard errors."""
MARKERS = {"shapley": "*", "shapley-paper": "P", "uniform": "s", "random": ".", "context": "^",
           "amp": "D", "dmpq": "v", "evolution": "x"}
COLORS = {"shapley": "tab:red", "shapley-paper": "tab:pink", "uniform": "tab:gray",
          "random": "tab:green", "context": "tab:orange", "amp": "tab:purple",
          "dmpq": "tab:blue", "evolution": "black"}
COMMAND = "python benchmarks/compare.py"


def _scale(model: dict[str, Any]) -> float:
    return 100.0 if model["percent"] else 1.0


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def _pm(values: Sequence[float], scale: float) -> str:
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{mean * scale:.2f}"
    return f"{mean * scale:.2f} ± {std * scale:.2f}"


def _rows(data: dict[str, Any], model: str, profile: str, budget: str,
          method: str | None = None) -> list[dict[str, Any]]:
    return [r for r in data["results"] if r["model"] == model and r["profile"] == profile
            and r["budget"] == budget and (method is None or r["method"] == method)]


def _ok(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == "ok"]


def verdict(data: dict[str, Any], model: str, profile: str, budget: str) -> str:
    """One sentence: shapley against the best other method on the held-out metric."""
    info = data["models"][model]
    scale = _scale(info)
    unit = " pt" if info["percent"] else ""
    rows = _ok(_rows(data, model, profile, budget))
    if not rows:
        statuses = {r["status"] for r in _rows(data, model, profile, budget)}
        return f"no method has a result ({', '.join(sorted(statuses)) or 'not run'})"
    means = {}
    for method in METHOD_ORDER:
        values = [r["heldout"] for r in rows if r["method"] == method]
        if values:
            means[method] = (values, *mean_std(values))
    if "shapley" not in means:
        return "shapley has no result at this budget"
    others = {m: v for m, v in means.items() if m not in ("shapley", REFERENCE)}
    if not others:
        return "no baseline has a result at this budget"
    s_values, s_mean, s_std = means["shapley"]
    best = max(others, key=lambda m: others[m][1])
    _, b_mean, b_std = others[best]
    diff = (s_mean - b_mean) * scale
    n = info["sizes"]["heldout"]
    paired = data["arenas"][f"{model}/{profile}"].get("paired", {}).get(budget, {}).get(best)
    spread = max(s_std, b_std) * scale
    if paired is not None:  # both methods' emitted models on the same held-out samples
        sampling = PAIRED_Z * paired["se"] * scale
        noise_text = (f"{PAIRED_Z:g} paired s.e. of the difference on the same {n} held-out "
                      f"samples {sampling:.2f}{unit}")
    else:
        p = min(max((s_mean + b_mean) / 2, 0.0), 1.0)
        sampling = math.sqrt(2 * p * (1 - p) / n) * scale if info["percent"] else 0.0
        noise_text = f"sampling s.e. of a difference on {n} held-out samples {sampling:.2f}{unit}"
    noise = max(sampling, spread)
    word = "wins" if diff > 0 else "loses" if diff < 0 else "ties"
    text = (f"shapley {_pm(s_values, scale)} vs best baseline {best} "
            f"{_pm(others[best][0], scale)} (held-out {info['metric']}): shapley {word}"
            f"{'' if word == 'ties' else f' by {abs(diff):.2f}{unit}'}")
    text += (f", {'within' if abs(diff) <= noise else 'beyond'} noise (largest seed std "
             f"{spread:.2f}{unit}, {noise_text})")
    text += _utility_verdict(rows)
    ranked = [m for m in sorted(means, key=lambda m: means[m][1], reverse=True)
              if m != REFERENCE]
    text += f"; shapley ranks {ranked.index('shapley') + 1} of {len(ranked)} methods"
    if REFERENCE in means:
        r_values, r_mean, _ = means[REFERENCE]
        gap = (r_mean - s_mean) * scale
        evals = [r["evaluations"] for r in rows if r["method"] == REFERENCE]
        text += (f"; the reference {REFERENCE} ({evals[0]} evaluations) "
                 f"{_pm(r_values, scale)}: shapley is "
                 + (f"{-gap:.2f}{unit} above it" if gap < 0 else
                    f"within {REFERENCE_GAP * scale:.1f}{unit} of it" if gap <= REFERENCE_GAP
                    * scale else f"{gap:.2f}{unit} below it"))
    fp32 = data["arenas"][f"{model}/{profile}"]["fp32"]["heldout"]
    top = max(v[1] for v in means.values())
    if top < 0.5 * fp32:
        text += (f". Every method keeps less than half of the FP32 {info['metric']} "
                 f"({top * scale:.2f} at best vs FP32 {fp32 * scale:.2f})")
    return text


def _utility_verdict(rows: list[dict[str, Any]]) -> str:
    """Shapley against the best other method on the search's utility, held-out samples."""
    means = {}
    for method in METHOD_ORDER:
        values = [r["heldout_utility"] for r in rows
                  if r["method"] == method and r.get("heldout_utility") is not None]
        if values and method != REFERENCE:
            means[method] = mean_std(values)[0]
    if "shapley" not in means or len(means) < 2:
        return ""
    best = max((m for m in means if m != "shapley"), key=lambda m: means[m])
    gap = means["shapley"] - means[best]
    word = "ties" if gap == 0 else "is ahead of" if gap > 0 else "is behind"
    return (f"; on the search's utility measured on the held-out samples (-KL to FP32 x1000) "
            f"shapley {means['shapley'] * SEARCH_SCALE:.2f} {word} the best baseline "
            f"{best} {means[best] * SEARCH_SCALE:.2f}")


SEARCH_COLUMN = "search utility (-KL to FP32, x1000)"
HELDOUT_UTILITY_COLUMN = "held-out -KL x1000"
SEARCH_SCALE = 1000.0
"""Every method searches on KL to FP32 (``smpq-onnx search``'s utility), shown x1000."""


def _result_table(data: dict[str, Any], model: str, profile: str, budget: str) -> list[str]:
    info = data["models"][model]
    scale = _scale(info)
    limits = data["arenas"][f"{model}/{profile}"]["budgets"][budget]["limits"]
    sanity = info["sizes"]["sanity"] > 0
    head = ["method", "seeds", f"held-out {info['metric']}", SEARCH_COLUMN,
            HELDOUT_UTILITY_COLUMN]
    head += ["sanity top-1 (20 labeled)"] if sanity else []
    head += ["BOPs (M)", "BOPs / budget", "flash (KB)", "SRAM (KB)", "fits",
             "evaluations", "wall (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in METHOD_ORDER:
        rows = _rows(data, model, profile, budget, method)
        if not rows:
            continue
        ok = _ok(rows)
        if not ok:
            note = rows[0].get("note", "").splitlines()[0][:120]
            lines.append(f"| {method} | - | {rows[0]['status']}: {note} |"
                         + " |" * (len(head) - 3))
            continue
        seeds = [r["seed"] for r in ok]
        bops = mean_std([r["bops"] for r in ok])[0]
        cells = [method, ",".join(str(s) for s in seeds) if seeds[0] is not None else "-",
                 _pm([r["heldout"] for r in ok], scale),
                 _pm([r["search"] for r in ok], SEARCH_SCALE),
                 _pm([r["heldout_utility"] for r in ok], SEARCH_SCALE)
                 if all(r.get("heldout_utility") is not None for r in ok) else "-"]
        if sanity:
            cells.append(_pm([r["sanity_top1"] for r in ok], 100.0))
        cells += [f"{bops / 1e6:.1f}",
                  f"{bops / limits['bops']:.3f}" if "bops" in limits else "-",
                  f"{mean_std([r['weight_bytes'] for r in ok])[0] / 1024:.1f}",
                  f"{mean_std([r['peak_activation_bytes'] for r in ok])[0] / 1024:.1f}",
                  "yes" if all(r["fits"] for r in ok) else "NO",
                  f"{mean_std([r['evaluations'] for r in ok])[0]:.0f}",
                  f"{mean_std([r['wall_s'] for r in ok])[0]:.1f}"]
        failed = len(rows) - len(ok)
        if failed:
            cells[1] += f" ({failed} failed)"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _budget_text(limits: dict[str, Any]) -> str:
    parts = []
    if "bops" in limits:
        parts.append(f"BOPs ≤ {limits['bops'] / 1e6:.1f} M")
    if "weight_bytes" in limits:
        parts.append(f"flash ≤ {limits['weight_bytes'] / 1024:.0f} KB")
    if "peak_activation_bytes" in limits:
        parts.append(f"SRAM ≤ {limits['peak_activation_bytes'] / 1024:.0f} KB")
    return ", ".join(parts)


def _setup(data: dict[str, Any]) -> list[str]:
    cfg = data["config"]
    lines = ["## Setup", "", "| model | metric | search split | held-out split | calibration |",
             "|---|---|---|---|---|"]
    for info in data["models"].values():
        s = info["splits"]
        lines.append(f"| {info['title']} | {info['metric']} | {s['search']} | "
                     f"{s['held-out']} | {s['calibration']} |")
        if "sanity" in s:
            lines.append(f"| {info['title']} (sanity) | top-1 | - | {s['sanity']} | - |")
    lines += ["", f"- Seeds of the stochastic methods (shapley, shapley-paper, random, "
              f"dmpq): {', '.join(str(s) for s in cfg['seeds'])}; evolution: the first "
              f"{cfg.get('evolution_seeds', 1)}, at "
              f"{', '.join(cfg.get('evolution_budgets', [])) or 'no budget'}."]
    lines.append(
        "- shapley: `smpq-onnx search`'s default, the budget-local game "
        "(`smpq_onnx.strategy.local`: windows around the incumbent, owen-cv with the "
        "single-side table at each window's top, q in the budget band, knapsack proposals, "
        "moves kept only when they win a paired bootstrap on the search split, then the "
        "joint polish around the incumbent where it costs at most a third of the count), "
        "searching on KL to FP32, at "
        + (f"{cfg['shapley_evals']} evaluations" if cfg.get("shapley_evals")
           else "AMP's evaluation count on the same model and profile (`--max-evals`)")
        + ". Each run starts on a cold evaluator, so its count is its own.")
    lines.append("- Every method searches on the same utility, `smpq-onnx search`'s: KL to "
                 "FP32 on the search split (finer than top-1 on 1000 images, with or without "
                 "labels); held-out scores use the model's metric on the chosen policy's "
                 "emitted QDQ model (what ships; the analyses below use the fake-quant "
                 "engine).")
    lines.append(
        f"- evolution: regularized evolution over feasible policies (mutations repaired to "
        f"the budget) with {cfg.get('evolution_factor', 10)}x the shapley run's evaluations "
        "of the same seed and budget: the strong reference, not a baseline to beat.")
    shapley: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in data["estimations"]:
        shapley.setdefault((e["model"], e["profile"]), []).append(e)
    for (model, profile), runs in shapley.items():
        evals = [r["evaluations"] for r in runs]
        lines.append(f"- shapley-paper (the paper's game, `--game global`: absent units FP32) "
                     f"on {model}/{profile}: Owen sampling, M = {runs[0]['samples']}"
                     f" antithetic q-level pairs per round, K = {runs[0]['rounds']} rounds, "
                     f"{min(evals)}-{max(evals)} distinct evaluations per seed.")
    for model, plan in cfg["models"].items():
        title = data["models"].get(model, {}).get("title", model)
        cap = plan["random_cap"]
        amp = plan["amp_candidates"]
        dmpq = [r for r in data["results"] if r["method"] == "dmpq" and r["status"] == "ok"
                and r["model"] == model]
        lines.append(
            f"- {title}: random gets as many draws (random knapsack utilities, feasible by "
            "construction; the best on the search split kept) as the shapley run of the same "
            "seed and budget evaluated" + (f", at most {cap}" if cap else "") + "; amp tries "
            + (f"W8A8 and {', '.join(amp)} per unit on the flexible profile (AIMET's candidate "
               "list; every option elsewhere)" if amp else "every legal option per unit")
            + (f"; dmpq trains alpha for {dmpq[0]['dmpq_epochs']} epochs on "
               f"{dmpq[0]['dmpq_images']} calibration images" if dmpq else "")
            + (f"; tau policies use options of at least {plan['tau_min_bits']} bits"
               if plan["tau_min_bits"] else "")
            + (f"; the alpha-pitfall analysis covers {plan['pitfall_units']} evenly spaced "
               "units" if plan["pitfall_units"] else "") + ".")
    lines.append("- context: each unit's weight and activation bits varied alone around "
                 "uniform W4A4 (joint options on mcu), then the same knapsack as shapley.")
    lines.append("- dmpq: `smpq_onnx.strategy.dmpq.search.dmpq_search` (EdMIPS-style alpha "
                 "trained on "
                 "calibration images, argmax alpha, cd raised and alpha retrained while that "
                 "misses the budget, knapsack on log-softmax alpha as the last resort), once "
                 "per budget; a tighter budget reuses a looser budget's result when its argmax "
                 "policy meets it (dmpq_search would repeat the same attempts), else continues "
                 "its cd doubling where the looser budget's stopped (each attempt trains afresh "
                 "from the seed: the skipped ones would miss again).")
    lines.append(f"- Kendall tau: {cfg['tau_policies']} policies asked, BOPs within "
                 f"±{cfg['tau_window']:.0%} of the W4A8 budget, {cfg['bootstrap']} bootstrap "
                 "resamples of the policies.")
    if cfg.get("skip"):
        lines.append(f"- Not run: {', '.join(cfg['skip'])}.")
    lines.append("- Evaluations: distinct policies a method asked for on the search split "
                 "(held-out re-evaluation not counted). The evaluator is shared and memoized "
                 "across methods, so wall times can be slightly lower than a method alone.")
    return lines


def _tau_section(data: dict[str, Any]) -> list[str]:
    if not data["tau"]:
        return []
    lines = ["## Ranking of iso-BOPs policies (Kendall τ_b against the held-out metric)", "",
             "| model | predictor | τ_b | 95 % bootstrap CI | policies |",
             "|---|---|---|---|---|"]
    for block in data["tau"]:
        title = f"{data['models'][block['model']]['title']}, {block.get('set', 'all options')}"
        by_method: dict[str, list[float]] = {}
        for name, p in block["predictors"].items():
            lines.append(f"| {title} | {name} | {_fmt(p['tau'], 3)} | "
                         f"[{_fmt(p['low'], 3)}, {_fmt(p['high'], 3)}] | {block['policies']} |")
            if not math.isnan(p["tau"]):
                by_method.setdefault(p["method"], []).append(p["tau"])
        for method, taus in by_method.items():
            if len(taus) > 1:
                mean, std = mean_std(taus)
                lines.append(f"| {title} | **{method}, mean over seeds** | "
                             f"{mean:.3f} ± {std:.3f} | - | {block['policies']} |")
    lines += ["", "Predicted score of a policy: the sum over units of the chosen option's "
              "utility (shapley-paper: the paper's game's Shapley values; dmpq: log-softmax of "
              "alpha per unit and side; "
              "context: sensitivity around W4A4; amp: minus the metric drop, where every "
              "option has one; shapley: the default search's values of the last window it "
              "played at this budget, which rank only policies inside that window: the "
              "'window of shapley seed' rows rank iso-BOPs policies drawn inside it, every "
              "predictor on the same policies). Measured: held-out metric."]
    spans = []
    for block in data["tau"]:
        info = data["models"][block["model"]]
        scale = _scale(info)
        m, bops = block["measured"], block["bops"]
        if m:
            spans.append(f"{info['title']}, {block.get('set', 'all options')}: held-out "
                         f"{info['metric']} of the policies "
                         f"{min(m) * scale:.2f}-{max(m) * scale:.2f}, BOPs "
                         f"{min(bops) / 1e6:.1f}-{max(bops) / 1e6:.1f} M")
    return [*lines, "", *[f"- {s}" for s in spans]]


def _pitfall_section(data: dict[str, Any]) -> list[str]:
    if not data["pitfall"]:
        return []
    lines = ["## The alpha pitfall (per unit and side, options switched around a fixed policy)", "",
             "| model | predictor | argmax ≠ measured best | ... beyond one s.e. | "
             "mean per-side τ_b | argmax at the most bits |", "|---|---|---|---|---|---|"]
    notes = []
    for block in data["pitfall"]:
        info = data["models"][block["model"]]
        title = info["title"]
        n = len(block["items"])
        by_method: dict[str, list[dict[str, Any]]] = {}
        for name, p in block["predictors"].items():
            lines.append(f"| {title} | {name} | {p['disagreement']:.0%} of {n} | "
                         f"{p['disagreement_within_noise']:.0%} | "
                         f"{_fmt(p['tau_mean'], 3)} ({p['tau_defined']} defined) | "
                         f"{p['argmax_most_bits']:.0%} |")
            by_method.setdefault(p["method"], []).append(p)
        for method, rows in by_method.items():
            if len(rows) > 1:
                taus = [r["tau_mean"] for r in rows if r["tau_mean"] is not None]
                lines.append(
                    f"| {title} | **{method}, mean over seeds** | "
                    f"{_pm([r['disagreement'] for r in rows], 100.0)} % | "
                    f"{_pm([r['disagreement_within_noise'] for r in rows], 100.0)} % | "
                    f"{_pm(taus, 1.0) if taus else '-'} | - |")
        scale = _scale(info)
        background = ", ".join(f"{k} {v * scale:.2f}"
                               for k, v in block.get("background_scores", {}).items())
        notes.append(f"{title}: background {block['background']} (held-out {info['metric']} "
                     f"of the uniform candidates: {background}), {block['units']} units, {n} "
                     f"unit sides; one s.e. = {block['tolerance'] * scale:.2f}; the measured "
                     f"best option includes the most bits in "
                     f"{block['measured_best_is_most_bits']:.0%} of them.")
    lines += ["", "Measured: the held-out metric with one unit's weight (or activation) "
              "bit-width switched and every other unit fixed at the background. The background "
              "is uniform W4A4 if it keeps half of the FP32 metric, else uniform W4A8. "
              "\"Beyond one s.e.\": the pick counts as wrong only if it measures more than one "
              "binomial standard error below the best. τ_b is undefined where every option "
              "measured the same.", "", *[f"- {n}" for n in notes]]
    return lines


def render(data: dict[str, Any], *, json_link: str = "results/compare.json",
           plot_link: str = "results/metric_vs_bops.png") -> str:
    """RESULTS.md; the links are relative to the markdown file."""
    env = data["environment"]
    wall = data.get("wall_s")
    lines = ["# Benchmark: SMPQ against the baselines", "",
             "Regenerate everything (installs its pip packages and Debian's "
             "`dataset-fashion-mnist` when missing):", "", "```bash", COMMAND, "```", "",
             f"Generated by `{' '.join([COMMAND, *env['argv']])}` on {env['started']}, "
             f"{env['cpus']} CPUs, onnxruntime {env['onnxruntime']}; wall time "
             f"{_fmt(wall / 60 if wall else None, 1)} min. Raw numbers: [{json_link}]"
             f"({json_link}); plot: [{plot_link}]({plot_link})."]
    if data["config"]["quick"]:
        lines += ["", "**This is a `--quick` smoke run: tiny splits, one seed. Its numbers say "
                  "nothing about the methods.**"]
    if not data.get("finished"):
        lines += ["", "**The run did not finish; the tables hold what was done.**"]
    lines += ["", *[f"- Note: {n}" for n in data["notes"]]] if data["notes"] else []
    lines += ["", "## Verdict per model and budget", ""]
    cells = []
    for arena in data["arenas"].values():
        model, profile = arena["model"], arena["profile"]
        for key, budget in arena["budgets"].items():
            title = data["models"][model]["title"]
            if not budget["feasible"]:
                text = f"infeasible: {budget['note']}"
            else:
                text = verdict(data, model, profile, key)
            cells.append(f"- **{title}, {profile}, {budget['label']}**: {text}.")
    lines += cells
    lines += ["", *_setup(data), ""]
    lines += ["## Results per model and budget", ""]
    for arena in data["arenas"].values():
        model, profile = arena["model"], arena["profile"]
        info = data["models"][model]
        scale = _scale(info)
        fp32 = arena["fp32"]
        for key, budget in arena["budgets"].items():
            lines += [f"### {info['title']}, {profile} profile, {budget['label']}", "",
                      f"Budget: {_budget_text(budget['limits'])}. FP32 {info['metric']}: "
                      f"held-out {fp32['heldout'] * scale:.2f}"
                      + (f", sanity top-1 {fp32['sanity_top1'] * 100:.2f}"
                         if fp32.get("sanity_top1") is not None else "") + ".", ""]
            if not budget["feasible"]:
                lines += [f"Infeasible for every method: {budget['note']}", ""]
                continue
            lines += _result_table(data, model, profile, key)
            lines += ["", f"Verdict: {verdict(data, model, profile, key)}.", ""]
    lines += _tau_section(data)
    lines += ["", *_pitfall_section(data)]
    lines += ["", f"![held-out metric against BOPs]({plot_link})", ""]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    arenas = [a for a in data["arenas"].values()
              if any(r["status"] == "ok" and r["model"] == a["model"]
                     and r["profile"] == a["profile"] for r in data["results"])]
    fig, axes = plt.subplots(1, max(len(arenas), 1), figsize=(5.2 * max(len(arenas), 1), 4.2),
                             squeeze=False)
    for ax, arena in zip(axes[0], arenas, strict=False):
        info = data["models"][arena["model"]]
        scale = _scale(info)
        for method in METHOD_ORDER:
            rows = [r for r in data["results"] if r["status"] == "ok" and r["method"] == method
                    and r["model"] == arena["model"] and r["profile"] == arena["profile"]]
            if rows:
                ax.scatter([r["bops"] / 1e6 for r in rows], [r["heldout"] * scale for r in rows],
                           marker=MARKERS[method], color=COLORS[method],
                           s=80 if method == "shapley" else 30,
                           alpha=0.75, label=method)
        for budget in arena["budgets"].values():
            if "bops" in budget["limits"]:
                ax.axvline(budget["limits"]["bops"] / 1e6, color="gray", linestyle="--",
                           linewidth=0.8)
        ax.axhline(arena["fp32"]["heldout"] * scale, color="green", linestyle=":",
                   label="FP32")
        ax.set_xlabel("BOPs (millions, per sample)")
        ax.set_ylabel(f"held-out {info['metric']}")
        ax.set_title(f"{info['title']}\n{arena['profile']} profile", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


INTERPRETATION = Path(__file__).parents[1] / "interpretation.md"
"""Prose written by a person after reading a run's numbers; appended, marked as such."""


def write(data: dict[str, Any], markdown_path: Path, plot_path: Path, json_path: Path) -> None:
    base = markdown_path.resolve().parent
    text = render(data, json_link=os.path.relpath(json_path.resolve(), base),
                  plot_link=os.path.relpath(plot_path.resolve(), base))
    if INTERPRETATION.is_file() and not data["config"]["quick"]:
        text += ("\n## Interpretation\n\n_Written by hand after reading the run of "
                 f"{data['environment']['started']}; a new run regenerates everything above "
                 f"but not this section ({INTERPRETATION.name})._\n\n"
                 + INTERPRETATION.read_text())
    markdown_path.write_text(text)
    plot(data, plot_path)

