"""Draft trees: the tokens one speculative step proposes and verifies in a single forward.

A tree has ``T`` nodes. Node 0 is the root: the last committed token, whose key and value
are not cached yet. Every other node is a drafted token whose parent comes earlier
(``parents[i] < i``), so breadth-first and depth-first orders are both fine. A chain (prompt
lookup) is the tree ``parents = [-1, 0, 1, 2, ...]``; plain greedy decoding is the
one-node tree.

Verification (greedy, lossless): run the ``T`` tokens against the cache with the ancestor
mask, take the argmax at every node, and walk down from the root while some child carries
the token its parent predicts. The accepted path plus the argmax at its last node (the
bonus token) are exactly what greedy decoding would have produced token by token.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def check_parents(parents: list[int]) -> None:
    """Raise ``ValueError`` unless ``parents`` describes a tree rooted at node 0.

    Catches an orphan (a parent index that is no node) and a cycle (a node that is its own
    ancestor), naming the node, before anything reaches the model.
    """
    if not parents or parents[0] != -1:
        raise ValueError("a draft tree needs a root: parents[0] must be -1")
    T = len(parents)
    for i, p in enumerate(parents[1:], 1):
        if not 0 <= p < T:
            raise ValueError(f"node {i} is an orphan: its parent {p} is not a node of the "
                             f"{T}-node tree")
    for i in range(1, T):
        seen, node = {i}, parents[i]
        while node != -1:
            if node in seen:
                raise ValueError(f"node {i}'s ancestors form a cycle through node {node}")
            seen.add(node)
            node = parents[node]


@dataclass
class DraftTree:
    """``tokens[i]`` drafted below ``parents[i]``; node 0 is the root (``parents[0] == -1``)."""

    tokens: list[int]
    parents: list[int]

    def __post_init__(self):
        if len(self.tokens) != len(self.parents):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.parents)} parents")
        if (not self.parents or self.parents[0] != -1
                or any(not 0 <= p < i for i, p in enumerate(self.parents[1:], 1))):
            check_parents(self.parents)  # names the missing root, orphan or cycle
            raise ValueError("draft tree nodes must come after their parents (parents[i] < i)")

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def chain(cls, root: int, draft: list[int]) -> "DraftTree":
        return cls([root, *draft], list(range(-1, len(draft))))

    def depths(self) -> list[int]:
        d = [0] * len(self)
        for i in range(1, len(self)):
            d[i] = d[self.parents[i]] + 1
        return d

    def ancestor_mask(self, device=None) -> torch.Tensor:
        """``[T, T]`` bool: ``mask[i, j]`` iff node ``j`` is node ``i`` or one of its ancestors."""
        T = len(self)
        mask = torch.zeros(T, T, dtype=torch.bool)
        for i in range(T):
            if i:
                mask[i] = mask[self.parents[i]]
            mask[i, i] = True
        return mask.to(device)

    def accept_greedy(self, predicted: list[int]) -> list[int]:
        """Longest root path along which every drafted token equals its parent's argmax.

        ``predicted[i]`` is the model's argmax after node ``i``. Returns node indices, root
        first. When siblings repeat a token, the first one is taken (they are equivalent).
        """
        children: dict[int, dict[int, int]] = {}
        for i in range(len(self) - 1, 0, -1):  # reverse, so the first sibling wins
            children.setdefault(self.parents[i], {})[self.tokens[i]] = i
        path = [0]
        while (nxt := children.get(path[-1], {}).get(predicted[path[-1]])) is not None:
            path.append(nxt)
        return path


def additive_mask(ancestors: torch.Tensor, cache_len: int, dtype: torch.dtype) -> torch.Tensor:
    """``[1, 1, T, cache_len + T]`` float mask from a tree's ``[T, T]`` ancestor mask: 0 where
    a tree query may attend, the dtype's minimum elsewhere. The cache is visible to every
    node; inside the tree, ancestors only."""
    T, device = ancestors.shape[0], ancestors.device
    visible = torch.ones(T, cache_len + T, dtype=torch.bool, device=device)
    visible[:, cache_len:] = ancestors
    mask = torch.zeros(T, cache_len + T, dtype=dtype, device=device)
    mask.masked_fill_(~visible, torch.finfo(dtype).min)
    return mask[None, None]


def template_from_paths(paths: list[list[int]]) -> tuple[list[int], list[int]]:
    """A static tree template from paths of ranks (Token Recycling's format).

    ``[0]`` is the root's best candidate, ``[0, 1]`` that node's second candidate, and so on.
    Returns ``(parents, ranks)`` for the root plus one node per path. Every proper prefix
    of a path must itself be listed before it; otherwise the node would be an orphan.
    """
    index = {(): 0}
    parents, ranks = [-1], [-1]
    for path in paths:
        key = tuple(path)
        if not key or any(r < 0 for r in key):
            raise ValueError(f"template path {path} must be a non-empty list of ranks >= 0")
        if key in index:
            raise ValueError(f"template path {path} is listed twice")
        if key[:-1] not in index:
            raise ValueError(f"template path {path} is an orphan: its parent {list(key[:-1])} "
                             "must be listed before it")
        index[key] = len(parents)
        parents.append(index[key[:-1]])
        ranks.append(key[-1])
    return parents, ranks
