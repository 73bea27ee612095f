"""Lookahead (Zhao et al. 2024, arXiv 2312.12728; github.com/alipay/PainlessInferenceAcceleration).

A trie of n-grams drafts many branches at once. For every token ``t``, ``roots[t]`` holds the
sequences of up to ``branch_length + 1`` tokens that followed ``t``: from the prompt (input
frequency, cleared at the next query) and from generated text (output frequency, kept).
Retrieval (§3.2, "hierarchical"): the last two tokens select the trie of what followed
them, then the last token alone adds what followed it; nodes are walked depth first,
children by mixed frequency ``(1 - w) f_in + w f_out``, up to ``decoding_length`` nodes
and ``branch_length`` deep. The union of the branches is one draft tree.

Simplifications against the reference code, none of which affects losslessness: output
n-grams are inserted once their window is complete (tails are inserted at the next query),
and the trie is never squeezed (our runs stay far below its 65,536-node limit).
"""
from __future__ import annotations

from tokenworks.speculative.tree import DraftTree
from tokenworks.speculative.tree_shape import SlotAcceptance, best_size


class _Node:
    __slots__ = ("children", "f_in", "f_out")

    def __init__(self):
        self.children: dict[int, _Node] = {}
        self.f_in = 0.0
        self.f_out = 0.0


class Lookahead:
    """``cost=None``: the paper's retrieval, up to ``decoding_length`` nodes every step.
    With a measured ``cost(T, L)`` (:func:`tokenworks.speculative.cost.calibrate`; ``make_drafter``
    passes it): the retrieved nodes are a probe (:class:`~tokenworks.speculative.tree_shape.SlotAcceptance`,
    slots by depth and rank among siblings), and each step verifies only the best-first subtree
    that maximises expected tokens per unit of cost (eq. 2 of :mod:`~tokenworks.speculative.tree_shape`)."""

    def __init__(self, decoding_length: int = 64, branch_length: int = 12,
                 output_weight: float = 1e-4, cost=None):
        if decoding_length < 1 or branch_length < 1:
            raise ValueError(f"decoding_length and branch_length must be >= 1, got "
                             f"{decoding_length}, {branch_length}")
        if not 0 <= output_weight <= 1:
            raise ValueError(f"output_weight must be in [0, 1], got {output_weight}")
        self.decoding_length, self.branch_length, self.w = decoding_length, branch_length, output_weight
        self.roots: dict[int, _Node] = {}
        self._input_nodes: list[_Node] = []
        self._output: list[int] = []  # this query's generated tokens
        self._inserted = 0  # output positions already inserted
        self.cost = cost
        self.stats = SlotAcceptance(depth=branch_length, ranks=decoding_length) if cost is not None else None

    def _put(self, seq: list[int], start: int, output: bool) -> None:
        node = self.roots.setdefault(seq[start], _Node())
        for t in seq[start + 1: start + 2 + self.branch_length]:
            node = node.children.setdefault(t, _Node())
            if output:
                node.f_out += 1
            else:
                node.f_in += 1
                self._input_nodes.append(node)

    def _flush_output(self, final: bool) -> None:
        out, span = self._output, self.branch_length + 1
        last = len(out) - 1 if final else len(out) - span
        for i in range(self._inserted, last):
            self._put(out, i, output=True)
        self._inserted = max(self._inserted, last)

    def start(self, prompt: list[int]) -> None:
        """New query: keep the last query's output n-grams, forget its prompt's."""
        self._flush_output(final=True)
        for node in self._input_nodes:
            node.f_in = 0.0
        self._input_nodes, self._output, self._inserted = [], [], 0
        if self.stats is not None:
            self.stats.forget_pending()
        for i in range(len(prompt) - 1):
            self._put(prompt, i, output=False)

    def _score(self, node: _Node) -> float:
        return (1 - self.w) * node.f_in + self.w * node.f_out

    def draft(self, context: list[int]) -> DraftTree:
        tokens, parents, ranks = [context[-1]], [-1], [-1]
        index: dict[tuple, int] = {(): 0}
        starts = []
        if len(context) >= 2 and (n := self.roots.get(context[-2])) and (n := n.children.get(context[-1])):
            starts.append(n)  # what followed the last two tokens
        if (n := self.roots.get(context[-1])) is not None:
            starts.append(n)  # what followed the last token
        for start in starts:
            stack = [(start, (), -1)]
            while stack and len(tokens) <= self.decoding_length:
                node, path, rank = stack.pop()
                if path and path not in index:
                    index[path] = len(tokens)
                    tokens.append(path[-1])
                    parents.append(index[path[:-1]])
                    ranks.append(rank)
                if len(path) < self.branch_length:
                    kids = [(t, c) for t, c in node.children.items() if self._score(c) > 0]
                    kids.sort(key=lambda tc: self._score(tc[1]))  # best popped first
                    stack += [(c, path + (t,), len(kids) - 1 - r) for r, (t, c) in enumerate(kids)]
        n = self.decoding_length + 1
        tokens, parents, ranks = tokens[:n], parents[:n], ranks[:n]
        if self.cost is None:
            return DraftTree(tokens, parents)
        depths = DraftTree(tokens, parents).depths()
        self.stats.probe(len(context), tokens, parents, list(zip(depths, ranks)))
        return self._sized(tokens, parents, depths, ranks, len(context))

    def _sized(self, tokens, parents, depths, ranks, cache_len) -> DraftTree:
        """The best-first subtree of the retrieved nodes under the learned slot acceptances."""
        q = self.stats.q()
        prob = [1.0] * len(tokens)
        for i in range(1, len(tokens)):
            d, r = min(depths[i], len(q)), min(ranks[i], len(q[0]) - 1)
            prob[i] = prob[parents[i]] * q[d - 1][r]
        order = sorted(range(1, len(tokens)), key=lambda i: (-prob[i], i))  # parents come first
        n = best_size([prob[i] for i in order], self.cost, cache_len)
        kept = [0] + sorted(order[:n])
        new = {old: j for j, old in enumerate(kept)}
        return DraftTree([tokens[i] for i in kept], [-1] + [new[parents[i]] for i in kept[1:]])

    def update(self, tree, logits, path, context) -> None:
        self._output += context[-len(path):]  # the accepted drafts and the bonus token
        self._flush_output(final=False)
        if self.stats is not None:
            self.stats.resolve(context)
