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
