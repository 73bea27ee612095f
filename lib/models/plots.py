"""Figures drawn from results records (``results/<method>/<config>.json``), never from live runs."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt

from tokenworks.style import legend_outside


def _runs(training: dict) -> list[dict]:
    """A model's training runs, first to last: a resumed run's card keeps the run it resumed
    from under ``previous``."""
    runs = []
    while training:
        runs.append(training)
        training = training.get("previous")
    return runs[::-1]


def zoo_loss(cards: list[dict]):
    """Training loss of each zoo model over its whole history (every resumed run, chained through
    ``previous``) against tokens seen, in bits per byte (nats per token over ln 2, times the
    held-out set's tokens per byte): comparable across the zoo's vocabularies. A dot marks where a
    resumed run starts."""
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    for card in cards:
        held_out = card["validation"]
        per_byte = held_out["tokens"] / held_out["bytes"] / math.log(2)
        xs, ys, starts = [], [], []
        for run in _runs(card["training"]):
            tokens_per_step = {seq: batch * seq for seq, batch, _ in run["stages"]}
            seen, prev = run["tokens_seen_total"] - run["tokens_this_run"], 0
            for step, loss, seq in run["loss_history"]:
                seen += (step - prev) * tokens_per_step[seq]
                prev = step
                xs.append(seen / 1e6)
                ys.append(loss * per_byte)
            if run.get("resumed_from"):
                starts.append(len(xs) - len(run["loss_history"]))
        line, = ax.plot(xs, ys, label=card["name"], lw=1)
        ax.plot([xs[i] for i in starts], [ys[i] for i in starts], "o", ms=5, color=line.get_color(), mec="k", zorder=3)
    ax.plot([], [], "o", ms=5, color="0.6", mec="k", label="a resumed run starts")
    ax.set(xlabel="training tokens (M)", ylabel="training loss (bits/byte)", title="Zoo training loss",
           xscale="log")
    legend_outside(ax)
    fig.tight_layout()
    return fig


def model_card_retrieval(record: dict):
    """Retrieval probe accuracy against distance, one line per format (``model_cards``)."""
    m = record["metrics"]
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=110)
    for fmt, style in (("card", "-o"), ("shifted", "--s")):
        pts = sorted((p["distance"], p["accuracy"]) for p in m["probes"] if p["format"] == fmt)
        ax.plot(*zip(*pts), style, label=f"{fmt} format")
    n = m["probes"][0]["n"]
    ax.set(xscale="log", ylim=(-0.05, 1.05), xlabel="distance to the definition (tokens)",
           ylabel=f"retrieved (share of {n})", title=f"{m['model']}: retrieval in context")
    ax.set_xticks(m["probe_lengths"], [f"{d:,}" for d in m["probe_lengths"]])
    ax.minorticks_off()
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
