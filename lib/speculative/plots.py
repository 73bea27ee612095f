"""Figures drawn from results records (``results/<method>/<config>.json``), never from live runs."""
from __future__ import annotations

import matplotlib.pyplot as plt


def speculative_speedup(record: dict):
    """Two panels per category: wall-clock speed-up over greedy, and mean accepted tokens."""
    rows = [r for r in record["metrics"]["by_method"] if r["method"] != "greedy"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cats = list(dict.fromkeys(r["category"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        by_cat = {r["category"]: r for r in rows if r["method"] == m}
        x = [c + (i - (len(methods) - 1) / 2) * width for c in range(len(cats))]
        colour = f"C{i}"  # the same colour for a method in both panels
        axes[0].bar(x, [by_cat[c]["speedup"] for c in cats], width, label=m, color=colour)
        if any(by_cat[c]["mean_accepted"] for c in cats):
            axes[1].bar(x, [by_cat[c]["mean_accepted"] or 0 for c in cats], width, label=m, color=colour)
    axes[0].axhline(1, color="grey", lw=0.8)
    axes[0].set(ylabel="speed-up over our greedy loop (x)", title="wall clock, side by side")
    axes[1].axhline(1, color="grey", lw=0.8)
    axes[1].set(ylabel="mean accepted tokens per step", title="tokens per verification step (ours only)")
    for ax in axes:
        ax.set_xticks(range(len(cats)), cats, rotation=20)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{record['parameters']['model']}, {record['provenance']['device']}", fontsize=9)
    fig.tight_layout()
    return fig


def speculative_accepted(record: dict):
    """Histogram of tokens accepted per step (bonus token included), one line per method."""
    hist = record["metrics"]["accepted_histogram"]
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    for m, counts in hist.items():
        total = sum(counts.values())
        xs = sorted(int(k) for k in counts)
        ax.plot(xs, [counts[str(x)] / total for x in xs], "-o", ms=3, label=m)
    ax.set(yscale="log", xlabel="tokens accepted in one step", ylabel="share of steps",
           title="Accepted length per verification step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
