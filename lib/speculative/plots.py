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


def speculative_cost(record: dict):
    """Left: the measured ``c(T, L)``, one line per cache length, with the flat cost a GPU
    approaches. Right: milliseconds per step by phase, one bar per method of ours. None for
    a record that predates the cost measurement."""
    if "cost" not in record["metrics"]:
        return None
    table, profile = record["metrics"]["cost"], record["metrics"]["profile"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for L, row in zip(table["cache_lens"], table["relative"]):
        axes[0].plot(table["sizes"], row, "-o", ms=3, label=f"cache {L}")
    axes[0].axhline(1, color="grey", lw=0.8, ls="--", label="one decoding step")
    axes[0].set(xlabel="tokens verified in one forward (T)", ylabel="time / one-token step",
                title="c(T, L): the cost of a verification forward")
    axes[0].legend(fontsize=7)
    methods = list(profile)
    bottom = [0.0] * len(methods)
    for i, phase in enumerate(next(iter(profile.values()))):
        ms = [profile[m][phase] for m in methods]
        axes[1].bar(range(len(methods)), ms, bottom=bottom, label=phase, color=f"C{i}")
        bottom = [b + v for b, v in zip(bottom, ms)]
    axes[1].set_xticks(range(len(methods)), methods, rotation=20, fontsize=7)
    axes[1].set(ylabel="milliseconds per step", title="Where a step's time goes")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{record['parameters']['model']}, {record['provenance']['device']}", fontsize=9)
    fig.tight_layout()
    return fig


def dyspec_trees(record: dict):
    """Tokens per step and speed-up over greedy for each tree shape, against the node budget,
    one panel pair per draft model."""
    rows = record["metrics"]["trees"]
    drafts = list(dict.fromkeys(r["draft"] for r in rows))
    fig, axes = plt.subplots(len(drafts), 2, figsize=(10, 3.4 * len(drafts)), dpi=110, squeeze=False)
    for d, draft in enumerate(drafts):
        for i, tree in enumerate(dict.fromkeys(r["tree"] for r in rows)):
            rs = sorted((r for r in rows if r["draft"] == draft and r["tree"] == tree), key=lambda r: r["budget"])
            budgets = [r["budget"] for r in rs]
            axes[d][0].plot(budgets, [r["mean_accepted"] for r in rs], "-o", ms=3, label=tree, color=f"C{i}")
            axes[d][1].plot(budgets, [r["speedup"] for r in rs], "-o", ms=3, label=tree, color=f"C{i}")
        axes[d][0].set(xlabel="node budget", ylabel="mean accepted tokens per step", title=f"draft: {draft}")
        axes[d][1].axhline(1, color="grey", lw=0.8)
        axes[d][1].set(xlabel="node budget", ylabel="speed-up over greedy (x)", title="wall clock, side by side")
        for ax in axes[d]:
            ax.set_xscale("log", base=2)
            ax.legend(fontsize=7)
    fig.suptitle(f"{record['parameters']['model']}, {record['provenance']['device']}", fontsize=9)
    fig.tight_layout()
    return fig


def token_recycling_sizes(record: dict):
    """Token Recycling against tree size: tokens per step and speed-up over greedy of fixed
    best-first trees (a line), the automatic tree with and without the prompt's rows (points at
    their mean size), and Hugging Face's prompt lookup (a dashed level). None for a record
    without the size sweep (``metrics["sizes"]``: rows with ``label``, ``nodes``, ``tree_nodes``,
    ``mean_accepted``, ``speedup``)."""
    sweep = record["metrics"].get("sizes")
    if not sweep:
        return None
    fixed = sorted((r for r in sweep if r["nodes"]), key=lambda r: r["nodes"])
    points = [r for r in sweep if not r["nodes"] and r["mean_accepted"]]
    peers = [r for r in sweep if not r["nodes"] and not r["mean_accepted"]]
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.6), dpi=110)
    for ax, key in zip(axes, ("mean_accepted", "speedup")):
        ax.plot([r["nodes"] for r in fixed], [r[key] for r in fixed], "-o", ms=4, color="C0",
                label="fixed best-first tree")
        for i, r in enumerate(points):
            ax.plot([r["tree_nodes"]], [r[key]], "*s"[i % 2], ms=9, color=f"C{i + 1}", label=r["label"])
    for i, r in enumerate(peers):
        axes[1].axhline(r["speedup"], color=f"C{len(points) + i + 1}", ls="--", lw=1, label=r["label"])
    axes[1].axhline(1, color="grey", lw=0.8, label="greedy")
    axes[0].set(xscale="log", xlabel="draft nodes per step (log scale)", ylabel="mean accepted tokens per step",
                title="acceptance grows with the tree")
    axes[1].set(xscale="log", xlabel="draft nodes per step (log scale)", ylabel="speed-up over greedy (x)",
                title="wall clock, side by side")
    for ax in axes:
        ax.set_xticks([r["nodes"] for r in fixed], [str(r["nodes"]) for r in fixed])
        ax.minorticks_off()
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"Token Recycling tree sizes, {record['parameters']['model']}, {record['provenance']['device']}", fontsize=9)
    fig.tight_layout()
    return fig
