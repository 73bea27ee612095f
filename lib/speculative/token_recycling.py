"""Token Recycling (Luo et al. 2024, arXiv 2408.08696; github.com/Luowaterbi/TokenRecycling).

The candidates a model considered and did not emit are recycled as drafts. An adjacency
matrix ``A[vocab, k]`` holds, for every token, the top-``k`` next tokens the model predicted
the last time that token was a tree node (rejected branches included, §3.1). A static tree
template is filled from ``A`` by one gather per depth (§3.2, "BFS"):

    tokens[i] = A[tokens[parent(i)], rank(i)]

and after verification every tree node's row is overwritten with the top-``k`` of its
logits (§3.3). ``A`` starts at zero and is kept across queries ("inherit", §3.3); hand the
same drafter to every call to keep it.

The paper's template suits a GPU, where verifying 80 tokens costs about one step. On a CPU
it costs several, so ``template="auto"`` (the default) re-shapes the tree for the machine.
A small tree rewrites few rows a step, so ``"auto"`` also recycles the prefill (ours, not the
paper's, whose prefill leaves ``A`` alone): the rows of the prompt's tokens get the top-``k``
of the prefill's logits at each token's last occurrence, the candidates the model already
computed for this very prompt.
"""
from __future__ import annotations

import torch

from tokenworks.speculative.tree import DraftTree, template_from_paths
from tokenworks.speculative.tree_shape import SlotAcceptance, choose_tree

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
    """Drafter with a persistent adjacency matrix and a tree template.

    ``template``: ``"auto"`` (default), ``"2.2.2"`` (the paper's 80-node tree), paths of ranks,
    or a tuple ``(parents, ranks)``. ``"auto"`` sizes and shapes the tree for the machine
    (:mod:`tokenworks.speculative.tree_shape`, eq. 2): every step the full 80-node template is
    filled as a probe and checked against the tokens greedy decoding then emits, which gives
    each slot's (depth, rank) acceptance (nodes below a never-written row are left out of both
    the probe and the tree, so the statistics describe the nodes a tree would verify); every ``retune_every`` steps the tree becomes the
    best-first tree of at most ``max_nodes`` nodes under those acceptances and the measured
    cost ``cost(T, L)`` (:func:`tokenworks.speculative.cost.calibrate`; ``make_drafter``
    passes it), and nodes below a token whose row was never written are left out.
    ``recycle_prompt``: write the prompt tokens' rows from the prefill's logits; ``None``
    (default) does for ``"auto"`` only, so a fixed template behaves as the reference code, whose
    prefill does not feed ``A`` (a cold matrix drafts token 0).
    """

    def __init__(self, vocab_size: int, k: int = 8, template="auto", device="cpu", cost=None,
                 max_nodes: int = 80, retune_every: int = 16, recycle_prompt: bool | None = None):
        if vocab_size < 1 or k < 1:
            raise ValueError(f"vocab_size and k must be >= 1, got {vocab_size}, {k}")
        if max_nodes < 1 or retune_every < 1:
            raise ValueError(f"max_nodes and retune_every must be >= 1, got {max_nodes}, {retune_every}")
        self.auto = isinstance(template, str) and template == "auto"
        if isinstance(template, str) and template not in ("auto", "2.2.2"):
            raise ValueError(f"unknown template {template!r}: 'auto', '2.2.2' (the paper's 80-node "
                             "tree), a list of rank paths or a tuple (parents, ranks)")
        if self.auto and cost is None:
            raise ValueError("template='auto' sizes the tree by the measured step cost: pass "
                             "cost=tokenworks.speculative.cost.calibrate(model) (make_drafter does), "
                             "or template='2.2.2'")
        if recycle_prompt not in (None, True, False):
            raise TypeError(f"recycle_prompt must be None, True or False, got {recycle_prompt!r}")
        self.k, self.device, self.cost = k, device, cost
        self.reads_prompt = self.auto if recycle_prompt is None else recycle_prompt
        self.max_nodes, self.retune_every = max_nodes, retune_every
        self.A = torch.zeros(vocab_size, k, dtype=torch.long, device=device)  # [V, k]
        if isinstance(template, tuple):  # (parents, ranks), checked as a DraftTree below
            parents, ranks = (list(x) for x in template)
        else:
            parents, ranks = template_from_paths(TEMPLATE_80 if isinstance(template, str) else template)
        if max(ranks[1:], default=0) >= k:
            raise ValueError(f"the template uses rank {max(ranks)} but the matrix keeps only "
                             f"k={k} candidates per token")
        if self.auto:
            self.filled = torch.zeros(vocab_size, dtype=torch.bool, device=device)  # rows ever written
            self.probe = _Template(parents, ranks, device)  # the 80-node tree, filled every step
            self.stats = SlotAcceptance(depth=max(self.probe.depths), ranks=k)
            self.steps = 0
            parents, ranks = template_from_paths([])  # greedy until the first statistics
        self.template = _Template(parents, ranks, device)

    def start(self, prompt: list[int]) -> None:
        if self.auto:
            self.stats.forget_pending()  # A and the statistics are inherited across queries

    def prompt_logits(self, tokens: list[int], logits: torch.Tensor) -> None:
        """``A[tokens[i]] = topk(logits[i], k)``: the prefill's candidates after each prompt
        token's last occurrence (``logits`` ``[n, vocab]``; the engine calls this when
        ``reads_prompt``)."""
        rows = torch.tensor(tokens, device=self.A.device)
        self.A[rows] = logits.topk(self.k, dim=-1).indices.to(self.A.device)
        if self.auto:
            self.filled[rows] = True

    def _fill(self, template: "_Template", root: int) -> torch.Tensor:
        tokens = torch.empty(len(template.parents), dtype=torch.long, device=self.A.device)
        tokens[0] = root
        flat = self.A.view(-1)
        for nodes in template.levels:  # tokens[i] = A[tokens[parent(i)], rank(i)]
            tokens[nodes] = flat[tokens[template.parent_t[nodes]] * self.k + template.rank_t[nodes]]
        return tokens

    def draft(self, context: list[int]) -> DraftTree:
        if not self.auto:
            return DraftTree(self._fill(self.template, context[-1]).tolist(), self.template.parents)
        if self.steps in (1, 2, 4, 8) or (self.steps and self.steps % self.retune_every == 0):
            probed = any(map(any, self.stats.tries))  # then only slots the probe has covered
            q = self.stats.q(untried=0.0 if probed else None)
            paths = choose_tree(q, self.cost, len(context), self.max_nodes,
                                max_depth=self.stats.depth)
            self.template = _Template(*template_from_paths(paths), self.A.device)
        self.steps += 1
        probe, slots = self._warm(self.probe, context[-1])  # what a tree of these slots would draft
        self.stats.probe(len(context), probe.tokens, probe.parents, slots)
        return self._warm(self.template, context[-1])[0]

    def _warm(self, template: "_Template", root: int) -> tuple[DraftTree, list[tuple[int, int]]]:
        """``template`` filled from ``A``, without the nodes below a token whose row was never
        written (a cold row drafts token 0, nothing useful); and the kept nodes' slots."""
        tokens = self._fill(template, root)
        keep = self.filled[tokens[template.parent_t]]
        keep[0] = True
        for nodes in template.levels:  # nothing below a dropped node either
            keep[nodes] &= keep[template.parent_t[nodes]]
        kept = keep.nonzero()[:, 0].tolist()
        new = {old: i for i, old in enumerate(kept)}
        parents = [-1] + [new[template.parents[i]] for i in kept[1:]]
        return DraftTree(tokens[kept].tolist(), parents), [template.slots[i] for i in kept]

    def update(self, tree: DraftTree, logits: torch.Tensor, path, context) -> None:
        """``A[tokens[i]] = topk(logits[i], k)`` for every node, the last write winning."""
        top = logits.topk(self.k, dim=-1).indices.to(self.A.device)  # [T, k]
        last = {t: i for i, t in enumerate(tree.tokens)}  # duplicates: the last node wins
        rows = torch.tensor(list(last.values()), device=self.A.device)
        written = torch.tensor(list(last), device=self.A.device)
        self.A[written] = top[rows]
        if self.auto:
            self.filled[written] = True
            self.stats.resolve(context)


class _Template:
    """A static tree of ranks, grouped by depth for one gather per level."""

    def __init__(self, parents: list[int], ranks: list[int], device):
        self.parents, self.ranks = parents, ranks
        self.depths = DraftTree([0] * len(parents), parents).depths()
        self.slots = list(zip(self.depths, ranks))  # (depth, rank) per node
        self.levels = [torch.tensor([i for i, d in enumerate(self.depths) if d == level], device=device)
                       for level in range(1, max(self.depths) + 1)]
        self.parent_t = torch.tensor(parents, device=device).clamp(min=0)
        self.rank_t = torch.tensor(ranks, device=device).clamp(min=0)
