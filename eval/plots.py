"""Plots of one run's `Results` as PNG files: quality per metric with intervals, latency per answer,
and quality against cost. It does not compute results or write the report pages (eval/render.py).
"""

from __future__ import annotations

import math
from pathlib import Path

from eval.config import ARMS
from eval.render import label
from eval.results import Results

COLOURS = dict(zip(ARMS, ("#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c")))
QUALITY = ("fact_recall", "token_f1", "semantic_sim", "faithfulness", "citation_correct", "abstention")


def _or(value: float | None, default: float) -> float:
    """A missing value (None, NaN) or a zero drawn as `default`."""
    return default if value is None or math.isnan(value) or not value else value


def plots(results: Results, out: Path) -> list[str]:
    """Draw the plots into `out`; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(results.arms)
    shown = [m for m in QUALITY if any(results.arms[a].metric(m).n for a in arms)] or ["exact_match"]  # all-empty: one empty panel
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4), dpi=100, squeeze=False)
    for ax, name in zip(axes[0], shown):
        cis = [results.arms[a].metric(name) for a in arms]
        means = [_or(c.mean, 0) for c in cis]
        errs = [[max(0, _or(c.mean, 0) - _or(c.low, 0)) for c in cis], [max(0, _or(c.high, 0) - _or(c.mean, 0)) for c in cis]]
        ax.bar(arms, means, yerr=errs, capsize=4, color=[COLOURS[a] for a in arms])
        ax.set_title(label(name))
        ax.set_ylim(0, 1.05)
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "quality.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=100)
    ax.boxplot([results.arms[a].latencies for a in arms], tick_labels=arms)
    ax.set_ylabel("seconds per answer")
    ax.set_title("Latency per answer")
    fig.tight_layout()
    fig.savefig(out / "latency.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=100)
    for a in arms:
        quality = _or(results.arms[a].metric(results.headline).mean, 0)
        cost = _or(results.arms[a].cost.latency_p50_s, 0)
        prompt = _or(results.arms[a].cost.prompt_tokens_mean, 50)
        ax.scatter([cost], [quality], s=max(30, prompt / 2), color=COLOURS[a], label=a, alpha=0.8)
    ax.set_xlabel("latency p50 (s)  ·  marker area ∝ prompt tokens")
    ax.set_ylabel(label(results.headline))
    ax.set_title("Quality vs cost")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "quality_vs_cost.png")
    plt.close(fig)
    return ["quality.png", "latency.png", "quality_vs_cost.png"]
