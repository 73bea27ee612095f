"""Figures drawn from results records (``results/<method>/<config>.json``), never from live runs."""
from __future__ import annotations

import matplotlib.pyplot as plt

from tokenworks.style import log_ticks


def tensorbleu_speedup(record: dict):
    """Speed-up over the NLTK loop against batch size: colour per counting, line style per length."""
    rows = record["metrics"]["benchmark"]
    labels = {"sort": "ours (packed keys, sort)", "unique": "paper (unique + bincount)",
              "triton": "Triton kernel"}
    colours = {"sort": "tab:blue", "unique": "tab:red", "triton": "tab:green"}
    lengths = sorted({r["length"] for r in rows})
    styles = ["-o", "--s", ":^", "-.v"]
    batches = sorted({r["batch"] for r in rows})
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    for variant in labels:
        for length, style in zip(lengths, styles):
            pts = sorted((r["batch"], r["nltk_s"] / r[f"{variant}_s"]) for r in rows
                         if r["length"] == length and r.get(f"{variant}_s"))
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, style, color=colours[variant], label=f"{labels[variant]}, {length} tokens")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="speed-up over the NLTK loop (x)",
           title=f"TensorBLEU, {record['provenance']['device']}")
    log_ticks(ax, batches)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
