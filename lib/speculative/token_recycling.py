"""Token Recycling (Luo et al. 2024, arXiv 2408.08696; github.com/Luowaterbi/TokenRecycling).

The candidates a model considered and did not emit are recycled as drafts. An adjacency
matrix ``A[vocab, k]`` holds, for every token, the top-``k`` next tokens the model predicted
the last time that token was a tree node (rejected branches included, §3.1). A static tree
template is filled from ``A`` by one gather per depth (§3.2, "BFS"):

    tokens[i] = A[tokens[parent(i)], rank(i)]

and after verification every tree node's row is overwritten with the top-``k`` of its
logits (§3.3). ``A`` starts at zero and is kept across queries ("inherit", §3.3); hand the
same drafter to every call to keep it.
"""
from __future__ import annotations

import torch

from tokenworks.speculative.tree import DraftTree, template_from_paths

# Template "2.2.2" of the reference code (model/recycling/tree_template_.py): 80 nodes,
# depths 1-6 hold 8/21/25/15/8/3 nodes, skewed towards the top-ranked chains.
TEMPLATE_80 = [
    [0], [1], [2], [3], [4], [5], [6], [7],
    [0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [0, 5], [0, 6], [0, 7], [1, 0], [1, 1], [1, 2],
    [1, 3], [2, 0], [2, 1], [2, 2], [3, 0], [3, 1], [4, 0], [5, 0], [6, 0], [7, 0],
    [0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3], [0, 0, 4], [0, 0, 5], [0, 0, 6], [0, 0, 7],
    [0, 1, 0], [0, 1, 1], [0, 1, 2], [0, 2, 0], [0, 2, 1], [0, 3, 0], [0, 4, 0], [0, 5, 0],
    [0, 6, 0], [0, 7, 0], [1, 0, 0], [1, 0, 1], [1, 1, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0],
    [5, 0, 0],
    [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 0, 3], [0, 0, 0, 4], [0, 0, 1, 0],
    [0, 0, 1, 1], [0, 0, 2, 0], [0, 0, 3, 0], [0, 0, 4, 0], [0, 1, 0, 0], [0, 2, 0, 0],
    [1, 0, 0, 0], [2, 0, 0, 0], [3, 0, 0, 0],
    [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 2], [0, 0, 0, 1, 0], [0, 0, 0, 2, 0],
    [0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0],
]


class TokenRecycling:
    """Drafter with a persistent adjacency matrix and a static tree template.

    ``template``: paths of ranks (default: the paper's 80-node tree) or a tuple ``(parents, ranks)``.
    As in the reference code, the prefill does not feed ``A``: a cold matrix drafts token 0.
    """

    def __init__(self, vocab_size: int, k: int = 8, template=None, device="cpu"):
        if vocab_size < 1 or k < 1:
            raise ValueError(f"vocab_size and k must be >= 1, got {vocab_size}, {k}")
        if isinstance(template, tuple):  # (parents, ranks), checked as a DraftTree below
            parents, ranks = (list(x) for x in template)
        else:
            parents, ranks = template_from_paths(TEMPLATE_80 if template is None else template)
        if max(ranks[1:], default=0) >= k:
            raise ValueError(f"the template uses rank {max(ranks)} but the matrix keeps only "
                             f"k={k} candidates per token")
        self.k, self.parents, self.ranks = k, parents, ranks
        self.A = torch.zeros(vocab_size, k, dtype=torch.long, device=device)  # [V, k]
        # nodes grouped by depth: one gather per level
        depths = DraftTree([0] * len(parents), parents).depths()
        self.levels = [torch.tensor([i for i, d in enumerate(depths) if d == level], device=device)
                       for level in range(1, max(depths) + 1)]
        self.parent_t = torch.tensor(parents, device=device).clamp(min=0)
        self.rank_t = torch.tensor(ranks, device=device).clamp(min=0)

    def start(self, prompt: list[int]) -> None:
        pass  # A is inherited across queries

    def draft(self, context: list[int]) -> DraftTree:
        tokens = torch.empty(len(self.parents), dtype=torch.long, device=self.A.device)
        tokens[0] = context[-1]
        flat = self.A.view(-1)
        for nodes in self.levels:  # tokens[i] = A[tokens[parent(i)], rank(i)]
            tokens[nodes] = flat[tokens[self.parent_t[nodes]] * self.k + self.rank_t[nodes]]
        return DraftTree(tokens.tolist(), self.parents)

    def update(self, tree: DraftTree, logits: torch.Tensor, path, context) -> None:
        """``A[tokens[i]] = topk(logits[i], k)`` for every node, the last write winning."""
        top = logits.topk(self.k, dim=-1).indices.to(self.A.device)  # [T, k]
        last = {t: i for i, t in enumerate(tree.tokens)}  # duplicates: the last node wins
        rows = torch.tensor(list(last.values()), device=self.A.device)
        self.A[torch.tensor(list(last), device=self.A.device)] = top[rows]
