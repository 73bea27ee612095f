"""Figures drawn from results records (``results/<method>/<config>.json``), never from live runs."""
from __future__ import annotations

import matplotlib.pyplot as plt


def zoo_loss(cards: list[dict]):
    """Training loss of each zoo model against tokens seen."""
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    for card in cards:
        hist = card["training"]["loss_history"]
        stages = card["training"]["stages"]
        tokens_per_step = {s: b * s for s, b, _ in stages}
        seen, xs = 0, []
        prev = 0
        for step, _, seq in hist:
            seen += (step - prev) * tokens_per_step[seq]
            prev = step
            xs.append(seen / 1e6)
        ax.plot(xs, [h[1] for h in hist], label=card["name"], lw=1)
    ax.set(xlabel="training tokens (M)", ylabel="cross-entropy (nats/token)", title="Zoo training loss")
    ax.legend()
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
