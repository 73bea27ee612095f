"""Timing for benchmarks (never for tests): median wall time with device synchronisation."""
from __future__ import annotations

import statistics
import time

import torch


def median_seconds(fn, repeats: int = 5, warmup: int = 1, device: torch.device | None = None) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
