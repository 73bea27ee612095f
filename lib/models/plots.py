"""Figures drawn from results records (``results/<method>/<config>.json``), never from live runs."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt

from tokenworks.style import legend_outside


def zoo_loss(cards: list[dict]):
    """Training loss of each zoo model against tokens seen, in bits per byte (the loss in nats
    per token over ln 2, times the held-out set's tokens per byte): comparable across the zoo's
    vocabularies. A run resumed from a checkpoint (``resumed_from``) starts at its step 1."""
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    for card in cards:
        hist, held_out = card["training"]["loss_history"], card["validation"]
        per_byte = held_out["tokens"] / held_out["bytes"] / math.log(2)
        tokens_per_step = {seq: batch * seq for seq, batch, _ in card["training"]["stages"]}
        seen, prev, xs = 0, 0, []
        for step, _, seq in hist:
            seen += (step - prev) * tokens_per_step[seq]
            prev = step
            xs.append(seen / 1e6)
        resumed = " (resumed)" if card["training"].get("resumed_from") else ""
        ax.plot(xs, [h[1] * per_byte for h in hist], label=card["name"] + resumed, lw=1)
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
