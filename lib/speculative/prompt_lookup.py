"""Prompt lookup decoding (Saxena 2023, github.com/apoorvumang/prompt-lookup-decoding).

Match the last ``n`` tokens (``n = max_ngram .. 1``) against the earlier context, prompt
and output alike; the earliest match proposes the ``num_draft`` tokens that followed it,
verified as a chain. No match: a plain greedy step.
"""
from __future__ import annotations

from tokenworks.speculative.tree import DraftTree


class PromptLookup:
    def __init__(self, max_ngram: int = 3, num_draft: int = 10):
        if max_ngram < 1 or num_draft < 1:
            raise ValueError(f"max_ngram and num_draft must be >= 1, got {max_ngram}, {num_draft}")
        self.max_ngram, self.num_draft = max_ngram, num_draft

    def start(self, prompt: list[int]) -> None:
        pass

    def draft(self, context: list[int]) -> DraftTree:
        n_ctx = len(context)
        for n in range(min(self.max_ngram, n_ctx - 1), 0, -1):
            tail = context[-n:]
            for i in range(n_ctx - n):  # earliest match whose continuation is non-empty
                if context[i:i + n] == tail:
                    follow = context[i + n: i + n + self.num_draft]
                    return DraftTree.chain(context[-1], follow)
        return DraftTree([context[-1]], [-1])

    def update(self, tree, logits, path, context) -> None:
        pass
