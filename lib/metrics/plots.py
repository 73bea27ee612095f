"""Figures drawn from results records (``results/<method>/<config>.json``), never from live runs."""
from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker

from tokenworks.metrics.tasks import LABELS
from tokenworks.metrics.tensorbleu import COUNTING
from tokenworks.style import legend_outside, log_ticks, palette

COLOURS = palette(list(COUNTING))  # one colour per counting in every figure of the family
STYLES = ["-o", "--s", ":^", "-.v"]  # one line style per sequence length


def tensorbleu_speedup(record: dict):
    """Speed-up over the NLTK loop against batch size: colour per counting, line style per length."""
    rows = record["metrics"]["benchmark"]
    lengths = sorted({r["length"] for r in rows})
    batches = sorted({r["batch"] for r in rows})
    fig, ax = plt.subplots(figsize=(8.4, 4), dpi=110)
    for counting in COUNTING:
        for length, style in zip(lengths, STYLES):
            pts = sorted((r["batch"], r["nltk_s"] / r[f"{counting}_s"]) for r in rows
                         if r["length"] == length and r.get(f"{counting}_s"))
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, style, color=COLOURS[counting], label=f"{LABELS[counting]}, {length:,} tokens")
    ax.axhline(1, color="grey", lw=0.8, label="as fast as the NLTK loop")
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="speed-up over the NLTK loop (x, log)",
           title=f"TensorBLEU against NLTK's sentence_bleu\n{record['provenance']['device']}")
    log_ticks(ax, batches)
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    legend_outside(ax, fontsize=8)
    fig.tight_layout()
    return fig
