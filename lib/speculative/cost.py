"""What a verification forward costs on the machine at hand: ``c(T, L)``.

``c(T, L)`` is the wall time of one forward of ``T`` tree tokens against a cache of ``L``
tokens (tree mask built, logits of every node computed), over the time of one decoding step
(``T = 1``) at the same ``L``. On a GPU at batch 1 both read the weights once, so ``c`` stays
near 1 for tens of tokens; on a CPU the matrix products grow with ``T`` and so does ``c``.
A draft tree pays off only where its expected accepted tokens exceed ``c`` (Sequoia, Chen et
al. 2024, arXiv 2402.12374, §4: "hardware-aware" tree sizes from measured forward times).

:func:`measure_cost` times the forwards; :class:`StepCost` interpolates the table;
:func:`calibrate` measures once per model, dtype, device and thread count and caches the
table under ``$TOKENWORKS_CACHE/speculative/`` (see :func:`tokenworks.models.packaged.cache_dir`).
"""
from __future__ import annotations

import bisect
import hashlib
import json
import platform
import statistics
import time
from dataclasses import dataclass

import torch

from tokenworks.models.packaged import cache_dir
from tokenworks.speculative.engine import crop_to, full_attention_cache
from tokenworks.speculative.tree import DraftTree, additive_mask

SIZES = (1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 81)  # tree tokens, root included; dense where trees fit
CACHE_LENS = (256, 1024)


class _Forwards:
    """Tree forwards of any size after ``L`` cached random tokens (the cache is cut back after each)."""

    def __init__(self, model, L: int, seed: int = 0):
        self.model, self.L = model, L
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.vocab = model.get_output_embeddings().weight.shape[0]
        self.gen = torch.Generator().manual_seed(seed)
        self.cache = full_attention_cache(model)  # refuses sliding-window layers, as the engine does
        with torch.no_grad():
            model(self._tokens(L), past_key_values=self.cache, use_cache=True, logits_to_keep=1)

    def _tokens(self, n: int) -> torch.Tensor:
        return torch.randint(self.vocab, (1, n), generator=self.gen).to(self.device)

    @torch.no_grad()
    def seconds(self, T: int) -> float:
        """Wall time of one ``T``-token forward with a chain's tree mask (built inside the timing)."""
        tokens = self._tokens(T)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        tree = DraftTree(tokens[0].tolist(), list(range(-1, T - 1)))
        mask = additive_mask(tree.ancestor_mask(self.device), self.L, self.dtype) if T > 1 else None
        self.model(tokens, position_ids=self.L + torch.arange(T, device=self.device)[None],
                   attention_mask=mask, past_key_values=self.cache, use_cache=True)
        sync()
        elapsed = time.perf_counter() - t0
        crop_to(self.cache, self.L)
        return elapsed


def forward_seconds(model, T: int, L: int, repeats: int = 5) -> float:
    """Median seconds of one ``T``-token tree forward after ``L`` cached tokens (one warm-up)."""
    bench = _Forwards(model, L)
    bench.seconds(T)
    return statistics.median(bench.seconds(T) for _ in range(repeats))


def measure_cost(model, sizes=SIZES, cache_lens=CACHE_LENS, repeats: int = 5) -> dict:
    """``{"sizes", "cache_lens", "seconds": [[s(T, L) for T] for L], "relative": c(T, L)}``.

    Sizes are timed in rounds (every size once per round, ``repeats`` rounds, medians), so
    a drift of the machine's speed hits all sizes alike. ``relative`` divides by the
    one-token step at the same ``L`` and, for trees (``T >= 2``), made non-decreasing in ``T``:
    ``c(T)`` is the cheapest measured size of at least ``T`` tokens, because a tree can grow to that
    size (measured here with packed weights, 2 rows ran slower than 4: the best 1-node tree
    then costs what a 3-node tree costs, and eq. 2 of tree_shape takes the 3 nodes)."""
    sizes, cache_lens = sorted(set(sizes)), sorted(set(cache_lens))
    if sizes[0] != 1 or any(not isinstance(t, int) or t < 1 for t in sizes):
        raise ValueError(f"sizes must be positive ints and include 1 (the decoding step), got {sizes}")
    if any(not isinstance(n, int) or n < 1 for n in cache_lens):
        raise ValueError(f"cache_lens must be positive ints, got {cache_lens}")
    seconds = []
    for L in cache_lens:
        bench = _Forwards(model, L)
        for T in sizes:  # warm-up
            bench.seconds(T)
        rounds = [[bench.seconds(T) for T in sizes] for _ in range(repeats)]
        seconds.append([statistics.median(col) for col in zip(*rounds)])
    relative = []
    for row in seconds:  # the step itself is 1 by definition; trees take the cheapest size >= T
        c, low = [], float("inf")
        for s in reversed(row[1:]):
            low = min(low, s / row[0])
            c.append(low)
        relative.append([1.0] + c[::-1])
    return {"sizes": sizes, "cache_lens": cache_lens, "seconds": seconds, "relative": relative}


def _interp(xs: list, ys: list, x: float) -> float:
    """Piecewise-linear through ``(xs, ys)``, linear beyond the last point, flat before the first."""
    if x <= xs[0] or len(xs) == 1:
        return ys[0]
    i = min(bisect.bisect_left(xs, x), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclass
class StepCost:
    """``cost(T, L)``: the relative cost of a ``T``-token verification forward at cache length
    ``L``, interpolated from a :func:`measure_cost` table (linear in ``T``, extrapolated beyond
    the largest size; linear in ``L`` between the measured lengths, clamped outside them)."""

    table: dict

    def __call__(self, T: int, L: int) -> float:
        if T < 1:
            raise ValueError(f"a verification forward has at least one token (the root), got T={T}")
        Ls, sizes = self.table["cache_lens"], self.table["sizes"]
        per_L = [_interp(sizes, row, T) for row in self.table["relative"]]
        return _interp(Ls, per_L, min(max(L, Ls[0]), Ls[-1]))

    @classmethod
    def flat(cls) -> "StepCost":
        """Every forward costs one step (the idealised GPU of the papers' templates)."""
        return cls({"sizes": [1], "cache_lens": [1], "seconds": [[0.0]], "relative": [[1.0]]})


def machine_key(model) -> str:
    """What a cost table depends on: model, its module types (packed linears or not), dtype,
    device (its name), threads, torch version."""
    device = next(model.parameters()).device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    if device.type == "cpu":
        try:
            where = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                         if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    parts = [getattr(model.config, "_name_or_path", "") or type(model).__name__,
             str(sum(p.numel() for p in model.parameters())), str(next(model.parameters()).dtype),
             device.type, where, str(torch.get_num_threads() if device.type == "cpu" else 1),
             torch.__version__, ",".join(sorted({type(m).__name__ for m in model.modules()}))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def calibrate(model, refresh: bool = False, **measure) -> StepCost:
    """The model's :class:`StepCost` on this machine: measured once (a few seconds), then read
    from ``$TOKENWORKS_CACHE/speculative/cost-<machine_key>.json``; ``refresh=True`` re-measures.
    ``measure`` goes to :func:`measure_cost`; it and the default sizes and cache lengths are part
    of the cached file's name, so a table measured at other sizes is never reused."""
    what = {"sizes": list(SIZES), "cache_lens": list(CACHE_LENS), **measure}
    extra = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]
    path = cache_dir() / "speculative" / f"cost-{machine_key(model)}-{extra}.json"
    if path.exists() and not refresh:
        return StepCost(json.loads(path.read_text()))
    table = measure_cost(model, **measure)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table))
    tmp.replace(path)
    return StepCost(table)
