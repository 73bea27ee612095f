"""DySpec (Xiong et al. 2024, arXiv 2410.11744): a draft tree grown at run time by draft probability.

A draft model (same tokenizer; :func:`~tokenworks.speculative.self_draft.self_draft` gives
one for any Llama-layout model) proposes the tree; the target verifies it in one forward
(:mod:`~tokenworks.speculative.engine`), so the output is the target's greedy output.

``tree="dynamic"`` (the paper, §3): every candidate child carries its *value*, the product
of draft probabilities along its root path, which estimates its chance to be accepted. A
max-heap over all candidates of the tree so far pops the ``width`` best; they join the tree,
one draft forward (tree mask over the draft's cache) gives their children's probabilities,
which are pushed; until ``budget`` nodes. The paper proves this greedy expansion optimal when
acceptance equals the draft probability (Thm. 1) and batches the draft forwards; ``width``
is that batch (the paper sizes it per hardware; no public code, so the batching is ours).

``tree="static"``: a fixed shape of ``budget`` nodes filled level by level from the draft's
top-``k`` (ranked candidates, as in Sequoia and SpecInfer); the shape is the best-first tree
under the slot acceptances learned online (:class:`~tokenworks.speculative.tree_shape.SlotAcceptance`),
re-chosen every 16 steps, so it is the best *static* tree of that size for this run.
``tree="chain"``: the draft's greedy continuation of ``budget`` tokens (classic speculative
decoding at temperature 0).
"""
from __future__ import annotations

import heapq
import itertools

import torch
from transformers import DynamicCache

from tokenworks.ids import check_count
from tokenworks.speculative.engine import crop_to
from tokenworks.speculative.self_draft import self_draft
from tokenworks.speculative.tree import DraftTree, template_from_paths
from tokenworks.speculative.tree_shape import SlotAcceptance, best_paths

TREES = ("dynamic", "static", "chain")


def same_tokenizer(target_tokenizer, draft_tokenizer) -> None:
    """Raise unless both tokenizers map every token string to the same id."""
    a, b = target_tokenizer.get_vocab(), draft_tokenizer.get_vocab()
    if a != b:
        diff = sorted(set(a.items()) ^ set(b.items()))[:3]
        raise ValueError(f"the draft model's tokenizer differs from the target's ({len(b)} against "
                         f"{len(a)} tokens; e.g. {diff}): draft tokens would mean other text. Use a draft "
                         "trained with the target's tokenizer, or self_draft(target, k)")


class DySpec:
    """Drafter: ``draft`` model, a ``budget`` of tree nodes (root excluded), ``tree`` shape.

    Without ``draft``, the draft is the target's first ``layers`` layers (:func:`self_draft`;
    default half the depth, a starting point: :func:`~tokenworks.speculative.self_draft.choose_layers`
    measures the best). ``k``: children considered per node; ``width``: nodes per draft forward.
    """

    def __init__(self, target, draft=None, layers: int | None = None, budget: int = 16,
                 tree: str = "dynamic", width: int = 4, k: int = 8, target_tokenizer=None,
                 draft_tokenizer=None):
        if draft is not None and layers is not None:
            raise ValueError("pass draft= (a draft model) or layers= (a self-draft of the target's "
                             "first layers), not both")
        if draft is None:
            draft = self_draft(target, max(1, target.config.num_hidden_layers // 2) if layers is None else layers)
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ValueError(f"budget is the number of drafted tree nodes and must be an int >= 1, "
                             f"got {budget!r}")
        check_count("width", width)
        check_count("k", k)
        if tree not in TREES:
            raise ValueError(f"unknown tree {tree!r}: choose one of {', '.join(TREES)}")
        n_target = target.get_output_embeddings().weight.shape[0]
        n_draft = draft.get_output_embeddings().weight.shape[0]
        if n_target != n_draft:
            raise ValueError(f"the draft model predicts {n_draft} tokens and the target {n_target}: "
                             "their tokenizers differ, so draft tokens would mean other text. Use a "
                             "draft with the target's tokenizer, or self_draft(target, k)")
        if (target_tokenizer is None) != (draft_tokenizer is None):
            raise ValueError("pass both target_tokenizer and draft_tokenizer (to check they agree), or neither")
        if target_tokenizer is not None:
            same_tokenizer(target_tokenizer, draft_tokenizer)
        self.draft_model, self.budget, self.tree, self.k = draft, budget, tree, k
        self.width = 1 if tree == "chain" else width
        self.device = next(draft.parameters()).device
        self.dtype = next(draft.parameters()).dtype
        self.stats = SlotAcceptance(depth=budget, ranks=k) if tree == "static" else None
        self.steps = 0
        self._shape = None
        self.start([])

    def start(self, prompt: list[int]) -> None:
        self.cache = DynamicCache(config=self.draft_model.config)
        self.cached: list[int] = []  # tokens in the draft's cache (committed context)
        if self.stats is not None:
            self.stats.forget_pending()

    @torch.no_grad()
    def _forward(self, ids: list[int], positions: list[int], mask) -> torch.Tensor:
        """Draft log-probabilities ``[len(ids), vocab]`` after appending ``ids`` to the cache."""
        out = self.draft_model(torch.tensor([ids], device=self.device),
                               position_ids=torch.tensor([positions], device=self.device),
                               attention_mask=mask, past_key_values=self.cache, use_cache=True)
        return out.logits[0].float().log_softmax(-1)

    def _catch_up(self, context: list[int]) -> torch.Tensor:
        """Feed the committed tokens the draft has not seen (root included); the root's log-probs."""
        n = len(self.cached)
        if context[:n] != self.cached or n == len(context):
            self.start(context)
            n = 0
        logp = self._forward(context[n:], list(range(n, len(context))), None)
        self.cached = list(context)
        return logp[-1]

    def _expand(self, tokens, parents, depths, nodes: list[int], L: int) -> torch.Tensor:
        """One draft forward over tree ``nodes`` (non-root; their ancestors already in the
        draft's cache, after the ``L + 1`` committed tokens): their log-probs ``[B, vocab]``."""
        order = self._in_cache + nodes  # tree nodes in cache order once this forward ran
        anc = DraftTree(tokens, parents).ancestor_mask(self.device)[nodes][:, order]  # [B, m + B]
        visible = torch.ones(len(nodes), L + 1 + len(order), dtype=torch.bool, device=self.device)
        visible[:, L + 1:] = anc
        mask = torch.zeros(visible.shape, dtype=self.dtype, device=self.device)
        mask.masked_fill_(~visible, torch.finfo(self.dtype).min)
        self._in_cache = order
        return self._forward([tokens[i] for i in nodes], [L + depths[i] for i in nodes], mask[None, None])

    def draft(self, context: list[int]) -> DraftTree:
        root_logp = self._catch_up(context)
        L = len(context) - 1  # the root sits at position L of the draft's cache
        self._in_cache = []
        if self.tree == "static":
            tree = self._static(context, root_logp, L)
        else:
            tree = self._dynamic(context, root_logp, L)
        crop_to(self.cache, L + 1)  # drop the tree: the next step feeds what was accepted
        self.steps += 1
        return tree

    def _dynamic(self, context, root_logp, L) -> DraftTree:
        tokens, parents, depths, value = [context[-1]], [-1], [0], [0.0]
        heap: list[tuple[float, int, int, int]] = []  # (-log value, order pushed, parent, token)
        pushed = itertools.count()

        def push(parent: int, logp: torch.Tensor):
            top = logp.topk(self.k if self.tree == "dynamic" else 1)
            for lp, t in zip(top.values.tolist(), top.indices.tolist()):
                heapq.heappush(heap, (-(value[parent] + lp), next(pushed), parent, t))

        push(0, root_logp)
        while len(tokens) <= self.budget and heap:
            batch = []
            while heap and len(batch) < self.width and len(tokens) <= self.budget:
                neg, _, parent, t = heapq.heappop(heap)
                batch.append(len(tokens))
                tokens.append(t)
                parents.append(parent)
                depths.append(depths[parent] + 1)
                value.append(-neg)
            if len(tokens) <= self.budget:  # the last batch's children would never be used
                logp = self._expand(tokens, parents, depths, batch, L)
                for row, node in enumerate(batch):
                    push(node, logp[row])
        return DraftTree(tokens, parents)

    def _static(self, context, root_logp, L) -> DraftTree:
        if self._shape is None or self.steps in (1, 2, 4, 8) or self.steps % 16 == 0:
            paths, _ = best_paths(self.stats.q(), self.budget)
            self._shape = template_from_paths(paths)
        parents, ranks = self._shape
        tree_depths = DraftTree([0] * len(parents), parents).depths()
        children: dict[int, list[int]] = {}
        for i in range(1, len(parents)):
            children.setdefault(parents[i], []).append(i)
        tokens = [context[-1]] + [0] * (len(parents) - 1)
        top = {0: root_logp.topk(self.k).indices.tolist()}
        for level in range(1, max(tree_depths) + 1):
            nodes = [i for i in range(1, len(parents)) if tree_depths[i] == level]
            for i in nodes:
                tokens[i] = top[parents[i]][ranks[i]]
            expand = [i for i in nodes if i in children]
            if expand:  # level by level: every ancestor is already in the cache
                logp = self._expand(tokens, parents, tree_depths, expand, L)
                top.update({i: logp[j].topk(self.k).indices.tolist() for j, i in enumerate(expand)})
        self.stats.probe(len(context), tokens, parents, list(zip(tree_depths, ranks)))
        return DraftTree(tokens, parents)

    def update(self, tree, logits, path, context) -> None:
        if self.stats is not None:
            self.stats.resolve(context)
