"""Figures drawn from results records (``results/<method>/<config>.json``), never from live runs."""
from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker

from tokenworks.decoding.tasks import ARMS
from tokenworks.style import legend_outside, palette

COLOURS = palette(list(ARMS))  # one colour per decoding strategy in every figure of the family
LABELS = {"greedy": "greedy", "sample": "sampling (T, top-p)", "cntp": "CNTP", "sc": "self-consistency",
          "cntp_sc": "CNTP + self-consistency"}


def cntp_accuracy_cost(record: dict):
    """Accuracy (95% bootstrap interval) against model forwards per answer, one panel per task."""
    tasks = record["metrics"]["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks) + 2.2, 3.8), dpi=110, squeeze=False)
    for ax, (task, res) in zip(axes[0], tasks.items()):
        for s in res["summary"]:
            x, y = s["forwards_per_answer"], 100 * s["accuracy"]
            err = [[y - 100 * s["ci_low"]], [100 * s["ci_high"] - y]]
            ax.errorbar([x], [y], yerr=err, fmt="o", capsize=3, color=COLOURS[s["strategy"]],
                        label=LABELS[s["strategy"]] + (f" ({s['chains']} chains)" if s["chains"] > 1 else ""))
        ax.set(xscale="log", xlabel="model forwards per answer (log)", ylabel="accuracy (%)",
               title=f"{task}: {res['model']}, {res['n']} items")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.margins(x=0.15)
    legend_outside(axes[0, -1], fontsize=8, title="95% interval over items", title_fontsize=8)
    fig.suptitle(f"CNTP vs. greedy, sampling and self-consistency, {record['provenance']['device']}", fontsize=9)
    fig.tight_layout()
    return fig
