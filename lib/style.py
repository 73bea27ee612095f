"""One figure style for every family's plots: shared axes helpers."""
from __future__ import annotations

import matplotlib.ticker


def log_ticks(ax, ticks, labels=None):
    """Ticks at the measured x values of a log axis, without minor labels."""
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(ticks, labels=labels or [str(t) for t in ticks])


def mean_or_nan(values):
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
