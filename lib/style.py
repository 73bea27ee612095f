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


def legend_outside(ax, **kw):
    """A legend to the right of ``ax``, off its data (``fig.tight_layout`` makes room)."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, **kw)


def palette(names: list[str]) -> dict[str, str]:
    """One colour per name, in order, from matplotlib's tab10 (then tab20): a family's plots
    module builds its methods' palette once, so each method keeps its colour in every figure."""
    import matplotlib

    colors = list(matplotlib.colormaps["tab10"].colors) + list(matplotlib.colormaps["tab20"].colors[1::2])
    if len(names) > len(colors):
        raise ValueError(f"{len(names)} names for a palette of {len(colors)} colours")
    return {name: matplotlib.colors.to_hex(c) for name, c in zip(names, colors)}
