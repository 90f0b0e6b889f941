"""Report plots: contribution heatmap, bits per layer, metric against BOPs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from smpq_onnx.report.document import utility_of


def contribution_heatmap(report: dict[str, Any], path: Path) -> None:
    units = list(dict.fromkeys(c["unit"] for c in report["contributions"]))
    columns = sorted({_column(c) for c in report["contributions"]},
                     key=lambda s: (s[0], int("".join(ch for ch in s[1:] if ch.isdigit()))))
    grid = np.full((len(units), len(columns)), np.nan)
    for c in report["contributions"]:
        grid[units.index(c["unit"]), columns.index(_column(c))] = c["phi"]
    fig, ax = plt.subplots(figsize=(max(6, len(columns) * 0.55), max(3, len(units) * 0.35)))
    limit = np.nanmax(np.abs(grid)) or 1.0
    image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=90)
    ax.set_yticks(range(len(units)), [_short(u) for u in units])
    ax.set_title("Shapley contribution per (layer, option)")
    fig.colorbar(image, ax=ax, label=utility_of(report)["metric"])
    _save(fig, path)


def bits_per_layer(report: dict[str, Any], path: Path) -> None:
    layers = report["layers"]
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(6, len(layers) * 0.3), 3.5))
    ax.bar(x - 0.2, [min(la["w_bits"], 16) for la in layers], 0.4, label="weight bits")
    ax.bar(x + 0.2, [min(la["a_bits"], 16) for la in layers], 0.4, label="activation bits")
    ax.set_xticks(x, [_short(la["name"]) for la in layers], rotation=90)
    ax.set_ylabel("bits (32 = float, shown as 16+)")
    ax.legend()
    ax.set_title("Chosen bit-widths per layer")
    _save(fig, path)


def metric_vs_bops(report: dict[str, Any], path: Path) -> None:
    points = report["evaluated_policies"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p["bops"] for p in points], [p["score"] for p in points], s=8, alpha=0.5,
               label="evaluated policies")
    measured = utility_of(report)  # the units of the evaluated policies
    ax.scatter([report["costs"]["bops"]], [measured["final"]], s=80, marker="*", color="red",
               label="chosen")
    for line in report["budget"]:
        if line["resource"] == "bops":
            ax.axvline(line["limit"], color="gray", linestyle="--", label="BOPs budget")
    ax.axhline(measured["fp32"], color="green", linestyle=":", label="FP32")
    ax.set_xscale("log")
    ax.set_xlabel("BOPs")
    ax.set_ylabel(measured["metric"])
    ax.legend(fontsize=8)
    ax.set_title("Metric against BOPs of every evaluated policy")
    _save(fig, path)


def _column(c: dict[str, Any]) -> str:
    return {"w": f"W{c['w_bits']}", "a": f"A{c['a_bits']}",
            "wa": f"W{c['w_bits']}A{c['a_bits']}"}[c["side"]]


def _short(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else "…" + name[-limit + 1:]


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
