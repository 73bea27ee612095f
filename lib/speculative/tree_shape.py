"""Hardware-aware draft trees: the shape that maximises expected tokens per unit of step cost.

A node's chance to be accepted is the product of its own and its ancestors' conditional
acceptance (a node counts only if its parent does). For a drafter whose candidates are
ranked (Token Recycling's matrix columns, a draft model's top-k), let ``q[d][r]`` be the
chance that the rank-``r`` child at depth ``d`` is accepted given its parent was. Then

    E[tokens per step](tree) = 1 + sum over nodes of prod_{(d, r) on its path} q[d][r]      (1)

and, because a child never beats its parent, the best tree of ``n`` nodes is the ``n``
nodes of highest path probability, grown best-first from the root (Sequoia, Chen et al.
2024, arXiv 2402.12374, §3.1 and App. C: the optimal tree under a positional acceptance
vector; DySpec, Xiong et al. 2024, arXiv 2410.11744, Thm. 1: greedy expansion by path
probability). The size is chosen against the measured cost ``c(T, L)``
(:mod:`tokenworks.speculative.cost`):

    n* = argmax_n  E_n / c(n + 1, L)                                                        (2)

which is 0, plain greedy decoding, when no tree pays for its forward.
"""
from __future__ import annotations

import heapq


def best_paths(q: list[list[float]], max_nodes: int, max_depth: int | None = None
               ) -> tuple[list[list[int]], list[float]]:
    """The ``max_nodes`` rank paths of highest path probability under ``q`` (eq. 1), in the
    order grown (every parent before its children), and each path's probability.

    ``q[d][r]``: acceptance of the rank-``r`` child at depth ``d + 1`` given its parent; depths
    beyond ``len(q)`` reuse the last row, up to ``max_depth`` (default: no limit)."""
    if max_nodes < 0:
        raise ValueError(f"max_nodes must be >= 0, got {max_nodes}")
    if not q or any(not row for row in q):
        raise ValueError("q needs at least one depth with at least one rank")
    heap = [(-q[0][r], (r,)) for r in range(len(q[0]))]
    heapq.heapify(heap)
    paths, probs = [], []
    while heap and len(paths) < max_nodes:
        neg, path = heapq.heappop(heap)
        if -neg <= 0:
            break
        paths.append(list(path))
        probs.append(-neg)
        if max_depth is not None and len(path) >= max_depth:
            continue
        row = q[min(len(path), len(q) - 1)]
        for r, p in enumerate(row):
            heapq.heappush(heap, (neg * p, path + (r,)))
    return paths, probs


def best_size(probs: list[float], cost, cache_len: int) -> int:
    """``n*`` of eq. 2: how many of ``probs`` (sorted best first) to draft at ``cache_len``."""
    best, best_rate, expected = 0, 1.0 / cost(1, cache_len), 1.0
    for n, p in enumerate(probs, 1):
        expected += p
        rate = expected / cost(n + 1, cache_len)
        if rate > best_rate:
            best, best_rate = n, rate
    return best


def choose_tree(q: list[list[float]], cost, cache_len: int, max_nodes: int,
                max_depth: int | None = None) -> list[list[int]]:
    """The rank paths of the tree that maximises expected tokens per unit of cost (eq. 2),
    at most ``max_nodes`` nodes and ``max_depth`` deep; ``[]`` when plain decoding is best."""
    paths, probs = best_paths(q, max_nodes, max_depth)
    return paths[: best_size(probs, cost, cache_len)]


def expected_tokens(paths: list[list[int]], q: list[list[float]]) -> float:
    """Eq. 1 for a given tree of rank paths."""
    total = 1.0
    for path in paths:
        p = 1.0
        for d, r in enumerate(path):
            row = q[min(d, len(q) - 1)]
            p *= row[r] if r < len(row) else 0.0
        total += p
    return total


class SlotAcceptance:
    """``q[d][r]`` learned online, for a drafter whose tree nodes sit in slots (depth, rank).

    Each step the drafter hands over a *probe*: the widest tree it could have drafted (for
    Token Recycling the 80-node template, for Lookahead every retrieved branch), whether or not
    it verifies all of it. Once the tokens that greedy decoding emitted after the probe's root
    are known, every probe node is checked against them (greedy output does not depend on the
    draft), so the statistics cover slots the verified tree left out and never freeze when the
    tree shrinks to nothing. ``q[d][r] = (hits + prior) / (tries + 1)``: a slot counts a try
    when its parent was right; ``prior`` is the estimate of a slot never tried."""

    def __init__(self, depth: int, ranks: int, prior: float = 0.5):
        if depth < 1 or ranks < 1:
            raise ValueError(f"depth and ranks must be >= 1, got {depth}, {ranks}")
        self.depth, self.ranks, self.prior = depth, ranks, prior
        self.tries = [[0] * ranks for _ in range(depth)]
        self.hits = [[0] * ranks for _ in range(depth)]
        self._pending: list[tuple[int, list[int], list[int], list[tuple[int, int]]]] = []

    def probe(self, position: int, tokens: list[int], parents: list[int], slots: list[tuple[int, int]]) -> None:
        """A tree drafted after ``position`` committed tokens; ``slots[i]`` is node ``i``'s
        (depth, rank), ``depth >= 1`` (the root's entry is ignored)."""
        if len(tokens) > 1:
            self._pending.append((position, tokens, parents, slots))

    def resolve(self, context: list[int]) -> None:
        """Score every pending probe whose continuation ``context`` now holds."""
        keep = []
        for position, tokens, parents, slots in self._pending:
            future = context[position: position + self.depth]
            if len(future) < min(self.depth, max(d for d, _ in slots[1:])):
                keep.append((position, tokens, parents, slots))
                continue
            right = [True] + [False] * (len(tokens) - 1)
            for i in range(1, len(tokens)):
                d, r = slots[i]
                if right[parents[i]] and d <= len(future) and r < self.ranks:
                    right[i] = tokens[i] == future[d - 1]
                    self.tries[d - 1][r] += 1
                    self.hits[d - 1][r] += right[i]
        self._pending = keep

    def forget_pending(self) -> None:
        """Drop probes that can no longer be scored (a new query starts)."""
        self._pending = []

    def q(self, untried: float | None = None) -> list[list[float]]:
        """The estimates; ``untried`` replaces the prior for slots never tried (0: keep a tree
        to the slots its probe covers)."""
        return [[(h + self.prior) / (t + 1) if t or untried is None else untried for h, t in zip(hs, ts)]
                for hs, ts in zip(self.hits, self.tries)]
