"""Figures drawn from results records (``results/omp_transplant/<config>.json``)."""
from __future__ import annotations

import matplotlib.pyplot as plt

from tokenworks.style import legend_outside, palette
from tokenworks.transplant.omp_transplant import METHODS

COLOURS = palette(list(METHODS))  # one colour per transplant method in every figure
PEER = "mergekit tokensurgeon (omp)"


def omp_transplant_bpb(record: dict):
    """Bits per byte per corpus of every transplant method (bars), with the base model under its
    own tokenizer, the donor model and, where it ran, mergekit's tokensurgeon (lines); equation
    accuracy beside it."""
    m = record["metrics"]
    corpora = sorted({r["corpus"] for r in m["bpb"]})
    bpb = {(r["model"], r["corpus"]): r["bits_per_byte"] for r in m["bpb"]}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110, gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / len(m["methods"])
    for i, method in enumerate(m["methods"]):
        xs = [c + (i - (len(m["methods"]) - 1) / 2) * width for c in range(len(corpora))]
        ax.bar(xs, [bpb[(method, c)] for c in corpora], width, color=COLOURS.get(method), label=method)
    lines = [(m["base"], "-", "base, own tokenizer"), (m["donor"], "--", "donor")]
    lines += [(PEER, ":", "the authors' tool")] if m.get("peer") else []
    for name, style, role in lines:
        for c, corpus in enumerate(corpora):
            ax.hlines(bpb[(name, corpus)], c - 0.45, c + 0.45, colors="black", linestyles=style,
                      label=f"{name} ({role})" if c == 0 else None)
    ax.set_xticks(range(len(corpora)), corpora)
    ax.set(ylabel="bits per byte (lower is better)",
           title=f"{m['base']} with {m['donor']}'s tokenizer ({m['shared']:,} shared, {m['new']:,} new tokens)")
    legend_outside(ax, fontsize=8)
    names = [m["base"], *m["methods"], m["donor"]]
    eq = m["equations"]
    ax2.barh(range(len(names)), [100 * eq[n]["accuracy"] for n in names],
             color=["black", *[COLOURS.get(n) for n in m["methods"]], "white"], edgecolor="black")
    ax2.set_yticks(range(len(names)), names)
    ax2.invert_yaxis()
    ax2.set(xlabel="accuracy (%)", xlim=(0, 100),
            title=f"few-shot equations ({eq[m['base']]['n']} items)")
    fig.suptitle(f"Tokenizer transplantation without training, {record['provenance']['device']}", fontsize=9)
    fig.tight_layout()
    return fig
