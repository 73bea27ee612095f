"""Figures drawn from results records (``results/<method>/<config>.json``), never from live runs.
Every method keeps one colour in every figure of the family (``COLORS``, built once from
``METHODS``); greedy decoding, the reference, is a black line; legends stand outside the data."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from tokenworks.style import legend_outside, palette

# method (as results records name it) -> legend label; the order fixes each method's colour
METHODS = {
    "token_recycling": "Token Recycling, automatic tree",
    "token_recycling:2.2.2": "Token Recycling, paper's 80-node tree",
    "prompt_lookup": "prompt lookup (ours)",
    "hf_prompt_lookup": "prompt lookup (Hugging Face)",
    "lookahead": "Lookahead, sized by cost",
    "lookahead:paper": "Lookahead, paper's retrieval",
    "token_recycling:fixed": "Token Recycling, fixed best-first tree",
    "hf_greedy": "greedy (Hugging Face generate)",
    "dyspec:static": "static tree",
    "dyspec:dynamic": "dynamic tree (DySpec)",
    "token_recycling:no-prompt-rows": "Token Recycling, automatic, no prompt rows",
    "dyspec:chain": "chain",
}
COLORS = palette(list(METHODS))
GREEDY = {"color": "black", "lw": 0.8, "label": "greedy (our loop)"}  # the reference: 1x, one token per step


def _method(name: str) -> str:
    """The ``METHODS`` key of a record's method name (the size sweep's ``token_recycling:<n>-node``
    trees are one method, ``token_recycling:fixed``)."""
    key = "token_recycling:fixed" if name.startswith("token_recycling:") and name.endswith("-node") else name
    if key not in METHODS:
        raise ValueError(f"no colour for method {name!r}: add it to METHODS in tokenworks.speculative.plots")
    return key


def color(name: str) -> str:
    """The family's colour of method ``name`` (greedy decoding's: black)."""
    return GREEDY["color"] if name == "greedy" else COLORS[_method(name)]


def label(name: str) -> str:
    """The legend label of method ``name``."""
    return GREEDY["label"] if name == "greedy" else METHODS[_method(name)]


def _suptitle(fig, record: dict, what: str = "") -> None:
    fig.suptitle(f"{what}{record['parameters']['model']}, {record['provenance']['device']}", fontsize=9)


def _grouped_bars(ax, groups: list, series: list[str], value) -> None:
    """One bar per series in each group, side by side; ``value(series, group)`` is the height
    (None: no bar)."""
    width = 0.8 / len(series)
    for i, m in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [value(m, g) for g in groups]
        ax.bar([x for x, h in zip(xs, heights) if h is not None], [h for h in heights if h is not None], width,
               color=color(m), label=label(m))


def speculative_speedup(record: dict):
    """Per category: wall-clock speed-up over our greedy loop of every method (left), and mean
    accepted tokens per step of the methods that run in our loop (right)."""
    rows = [r for r in record["metrics"]["by_method"] if r["method"] != "greedy"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cats = list(dict.fromkeys(r["category"] for r in rows))
    by = {(r["method"], r["category"]): r for r in rows}
    ours = [m for m in methods if any(by[(m, c)]["mean_accepted"] for c in cats)]
    fig, axes = plt.subplots(1, 2 if ours else 1, figsize=(12, 4), dpi=110, squeeze=False)
    axes = axes[0]
    _grouped_bars(axes[0], cats, methods, lambda m, c: by[(m, c)]["speedup"])
    axes[0].set(ylabel="speed-up over our greedy loop (x)", title="wall clock, side by side")
    if ours:
        _grouped_bars(axes[1], cats, ours, lambda m, c: by[(m, c)]["mean_accepted"])
        axes[1].set(ylabel="mean accepted tokens per step", title="tokens per verification step (our loop)")
    for ax in axes:
        ax.axhline(1, **GREEDY)
        ax.set_xticks(range(len(cats)), cats, rotation=20)
    legend_outside(axes[-1], handles=axes[0].get_legend_handles_labels()[0], fontsize=8)
    _suptitle(fig, record)
    fig.tight_layout()
    return fig


def speculative_accepted(record: dict):
    """Histogram of tokens accepted per verification step (the bonus token included), as a
    share of each method's steps: one bar per method at each length (log scale)."""
    hist = {m: {int(k): v for k, v in counts.items()} for m, counts in record["metrics"]["accepted_histogram"].items()}
    lengths = list(range(1, max(max(h) for h in hist.values()) + 1))
    share = {m: {k: v / sum(h.values()) for k, v in h.items() if v} for m, h in hist.items()}
    fig, ax = plt.subplots(figsize=(9, 3.8), dpi=110)
    _grouped_bars(ax, lengths, list(hist), lambda m, n: share[m].get(n))
    ax.set_yscale("log")
    ax.set_ylim(0.7 * min(min(s.values()) for s in share.values()), 1)
    ax.set_xticks(range(len(lengths)), lengths)
    ax.set(xlabel="tokens accepted in one step", ylabel="share of steps", title="Accepted length per verification step")
    legend_outside(ax, fontsize=8)
    _suptitle(fig, record)
    fig.tight_layout()
    return fig


def speculative_cost(record: dict):
    """Left: the measured ``c(T, L)``, one line per cache length, against the flat cost a GPU
    approaches at batch 1. Right: milliseconds per step by phase, one bar per method of ours.
    None for a record that predates the cost measurement."""
    if "cost" not in record["metrics"]:
        return None
    table, profile = record["metrics"]["cost"], record["metrics"]["profile"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), dpi=110, gridspec_kw={"width_ratios": [1, 1.15]})
    shades = np.linspace(0.55, 0, len(table["cache_lens"]))
    for L, row, shade, marker in zip(table["cache_lens"], table["relative"], shades, "os^v"):
        axes[0].plot(table["sizes"], row, "-" + marker, ms=3, color=str(shade))
        axes[0].annotate(f"cache {L}", (table["sizes"][-1], row[-1]), xytext=(4, 0), textcoords="offset points",
                         va="center", fontsize=8, color=str(shade))
    axes[0].axhline(1, **GREEDY, ls="--")
    axes[0].annotate("one decoding step", (table["sizes"][-1], 1), xytext=(0, 4), textcoords="offset points",
                     ha="right", fontsize=8)
    axes[0].set_xlim(0, table["sizes"][-1] * 1.18)
    axes[0].set(xlabel="tokens verified in one forward (T)", ylabel="time / one-token step",
                title="c(T, L): the cost of a verification forward")
    methods = list(profile)[::-1]  # the first at the top
    phases = list(profile[methods[0]])
    grey = plt.colormaps["Greys"](np.linspace(0.85, 0.2, len(phases)))
    left = np.zeros(len(methods))
    for phase, shade in zip(phases, grey):
        ms = np.array([profile[m][phase] for m in methods])
        axes[1].barh(range(len(methods)), ms, left=left, color=shade, edgecolor="white", lw=0.5, label=phase)
        left += ms
    axes[1].set_yticks(range(len(methods)), [label(m) for m in methods], fontsize=8)
    for tick, m in zip(axes[1].get_yticklabels(), methods):
        tick.set_color(color(m))
    axes[1].set(xlabel="milliseconds per step", title="Where a step's time goes")
    legend_outside(axes[1], fontsize=8, title="phase", title_fontsize=8)
    _suptitle(fig, record)
    fig.tight_layout()
    return fig


def dyspec_trees(record: dict):
    """Tokens per step and speed-up over greedy of each tree shape against the node budget,
    one row of panels per target/draft pair."""
    rows = record["metrics"]["trees"]
    pairs = list(dict.fromkeys(r["pair"] for r in rows))
    budgets = sorted({r["budget"] for r in rows})
    fig, axes = plt.subplots(len(pairs), 2, figsize=(11, 3.3 * len(pairs)), dpi=110, squeeze=False)
    for ax_row, pair in zip(axes, pairs):
        for tree in dict.fromkeys(r["tree"] for r in rows):
            rs = sorted((r for r in rows if r["pair"] == pair and r["tree"] == tree), key=lambda r: r["budget"])
            for ax, key in zip(ax_row, ("mean_accepted", "speedup")):
                ax.plot([r["budget"] for r in rs], [r[key] for r in rs], "-o", ms=4, lw=1.8,
                        color=color(f"dyspec:{tree}"), label=label(f"dyspec:{tree}"))
        ax_row[0].set(ylabel="mean accepted tokens per step", title=pair)
        ax_row[1].axhline(1, **GREEDY)
        ax_row[1].set(ylabel="speed-up over greedy (x)", title="wall clock, side by side")
        for ax in ax_row:
            ax.set_xscale("log", base=2)
            ax.set_xticks(budgets, [str(b) for b in budgets])
            ax.minorticks_off()
            ax.set_xlabel("node budget (log scale)")
    legend_outside(axes[0][1], fontsize=8)
    _suptitle(fig, record)
    fig.tight_layout()
    return fig


def token_recycling_sizes(record: dict):
    """Token Recycling against tree size: tokens per step and speed-up over greedy of fixed
    best-first trees (a line), the automatic tree with and without the prompt's rows (points at
    their mean size), and Hugging Face's prompt lookup (a dashed level). None for a record
    without the size sweep (``metrics["sizes"]``: rows with ``method``, ``nodes``, ``tree_nodes``,
    ``mean_accepted``, ``speedup``)."""
    sweep = record["metrics"].get("sizes")
    if not sweep:
        return None
    fixed = sorted((r for r in sweep if r["nodes"]), key=lambda r: r["nodes"])
    points = [r for r in sweep if not r["nodes"] and r["mean_accepted"]]
    peers = [r for r in sweep if not r["nodes"] and not r["mean_accepted"]]
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 3.8), dpi=110)
    for ax, key in zip(axes, ("mean_accepted", "speedup")):
        ax.plot([r["nodes"] for r in fixed], [r[key] for r in fixed], "-o", ms=4,
                color=color(fixed[0]["method"]), label=label(fixed[0]["method"]))
        for r, marker in zip(points, "*s^v"):
            ax.plot([r["tree_nodes"]], [r[key]], marker, ms=9, color=color(r["method"]), label=label(r["method"]))
    for r in peers:
        axes[1].axhline(r["speedup"], color=color(r["method"]), ls="--", lw=1.2, label=label(r["method"]))
    axes[1].axhline(1, **GREEDY)
    speeds = [r["speedup"] for r in sweep] + [1]
    pad = 0.06 * (max(speeds) - min(speeds))
    axes[1].set_ylim(min(speeds) - pad, max(speeds) + pad)
    axes[0].set(ylabel="mean accepted tokens per step", title="acceptance grows with the tree")
    axes[1].set(ylabel="speed-up over greedy (x)", title="wall clock, side by side")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks([r["nodes"] for r in fixed], [str(r["nodes"]) for r in fixed])
        ax.minorticks_off()
        ax.set_xlabel("draft nodes per step (log scale)")
    legend_outside(axes[1], fontsize=8)
    _suptitle(fig, record, "Token Recycling tree sizes, ")
    fig.tight_layout()
    return fig
