"""The drafter protocol: what the verification loop (:func:`tokenworks.speculative.engine.run`)
asks of a drafter, and all it asks.

Per generation the loop calls ``start(prompt)`` once; per step ``draft(context)`` proposes a
tree rooted at the last committed token, one forward verifies it, and ``update`` shows the
drafter what the model predicted at every node. A drafter only proposes: whatever it drafts,
the output is the model's greedy output (tests/test_speculative_conformance.py checks every
registered drafter). Read from the loop itself and from the three papers' reference code
(prompt lookup's ``find_candidate_pred_tokens``, Token Recycling's adjacency matrix update,
Lookahead's trie ``put``/``get``), which share this start/draft/update shape.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from tokenworks.speculative.tree import DraftTree


@runtime_checkable
class Drafter(Protocol):
    """A speculative drafter; ``METHODS`` holds classes whose instances satisfy it."""

    def start(self, prompt: list[int]) -> None:
        """A new query with token ids ``prompt``. State meant to span queries (Token
        Recycling's matrix, Lookahead's output n-grams) is kept; per-query state is reset."""

    def draft(self, context: list[int]) -> DraftTree:
        """The draft tree for the next step: ``context`` is the prompt plus the output so far;
        the tree's root must be ``context[-1]`` (committed, not yet in the KV cache). A
        one-node tree is a plain greedy step."""

    def update(self, tree: DraftTree, logits: torch.Tensor, path: list[int],
               context: list[int]) -> None:
        """After verifying ``tree``: ``logits`` ``[T, vocab]``, the model's prediction after
        every node; ``path`` the accepted node indices, root first; ``context`` now ends with
        the ``len(path)`` tokens this step emitted (the accepted drafts and the bonus token)."""


# Optional: a drafter whose ``reads_prompt`` is True also gets, right after ``start``,
# ``prompt_logits(tokens, logits)``: the prefill's logits ``[n, vocab]`` after the last
# occurrence of each distinct prompt token ``tokens`` (the prompt's last token excluded, it is
# the first root). The loop then runs the output head on those positions instead of one.
