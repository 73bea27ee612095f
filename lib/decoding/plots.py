"""Figures drawn from results records (``results/<method>/<config>.json``), never from live runs."""
from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker


def cntp_accuracy_cost(record: dict):
    """Accuracy (95% bootstrap interval) against model forwards per answer, one panel per task."""
    tasks = record["metrics"]["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4), dpi=110, squeeze=False)
    colours = {"greedy": "black", "sample": "tab:blue", "cntp": "tab:red", "sc": "tab:cyan",
               "cntp_sc": "tab:orange"}
    for ax, (task, res) in zip(axes[0], tasks.items()):
        for s in res["summary"]:
            x, y = s["forwards_per_answer"], 100 * s["accuracy"]
            err = [[y - 100 * s["ci_low"]], [100 * s["ci_high"] - y]]
            ax.errorbar([x], [y], yerr=err, fmt="o", capsize=3, color=colours[s["strategy"]],
                        label=s["strategy"])
        ax.set(xscale="log", xlabel="model forwards per answer (log)", ylabel="accuracy (%)",
               title=f"{task} ({res['model']}, {res['n']} items)")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=8)
    fig.suptitle(f"CNTP vs. greedy, sampling and self-consistency, {record['provenance']['device']}",
                 fontsize=9)
    fig.tight_layout()
    return fig
