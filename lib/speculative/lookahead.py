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


class _Node:
    __slots__ = ("children", "f_in", "f_out")

    def __init__(self):
        self.children: dict[int, _Node] = {}
        self.f_in = 0.0
        self.f_out = 0.0


class Lookahead:
    def __init__(self, decoding_length: int = 64, branch_length: int = 12,
                 output_weight: float = 1e-4):
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
        for i in range(len(prompt) - 1):
            self._put(prompt, i, output=False)

    def _score(self, node: _Node) -> float:
        return (1 - self.w) * node.f_in + self.w * node.f_out

    def draft(self, context: list[int]) -> DraftTree:
        tokens, parents = [context[-1]], [-1]
        index: dict[tuple, int] = {(): 0}
        starts = []
        if len(context) >= 2 and (n := self.roots.get(context[-2])) and (n := n.children.get(context[-1])):
            starts.append(n)  # what followed the last two tokens
        if (n := self.roots.get(context[-1])) is not None:
            starts.append(n)  # what followed the last token
        for start in starts:
            stack = [(start, ())]
            while stack and len(tokens) <= self.decoding_length:
                node, path = stack.pop()
                if path and path not in index:
                    index[path] = len(tokens)
                    tokens.append(path[-1])
                    parents.append(index[path[:-1]])
                if len(path) < self.branch_length:
                    kids = [(t, c) for t, c in node.children.items() if self._score(c) > 0]
                    kids.sort(key=lambda tc: self._score(tc[1]))  # best popped first
                    stack += [(c, path + (t,)) for t, c in kids]
        return DraftTree(tokens[: self.decoding_length + 1], parents[: self.decoding_length + 1])

    def update(self, tree, logits, path, context) -> None:
        self._output += context[-len(path):]  # the accepted drafts and the bonus token
        self._flush_output(final=False)
