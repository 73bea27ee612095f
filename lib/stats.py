"""Statistics shared by the experiments: intervals for the verdicts."""
from __future__ import annotations

import torch


def bootstrap(values: list[float], other: list[float] | None = None, n: int = 2000,
              seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` (or of ``values - other``, paired)
    over ``n`` resamples of the items."""
    v = torch.tensor(values, dtype=torch.float64)
    if other is not None:
        v = v - torch.tensor(other, dtype=torch.float64)
    idx = torch.randint(len(v), (n, len(v)), generator=torch.Generator().manual_seed(seed))
    means = v[idx].mean(1)
    return float(means.quantile(0.025)), float(means.quantile(0.975))
