"""Lossless speculative decoding: drafters and one verification loop.

>>> out = generate(model, input_ids, method="token_recycling", max_new_tokens=128)
>>> out.tokens, out.mean_accepted

Methods: ``greedy`` (the reference), ``prompt_lookup``, ``token_recycling``, ``lookahead``.
Options go to the drafter; pass ``drafter=`` to keep one drafter's state across calls
(Token Recycling's matrix, Lookahead's output trie), as the papers do across queries.
"""
from __future__ import annotations

from tokenworks.speculative.engine import Generation, Greedy, run
from tokenworks.speculative.lookahead import Lookahead
from tokenworks.speculative.prompt_lookup import PromptLookup
from tokenworks.speculative.token_recycling import TokenRecycling
from tokenworks.speculative.tree import DraftTree

METHODS = {"greedy": Greedy, "prompt_lookup": PromptLookup,
           "token_recycling": TokenRecycling, "lookahead": Lookahead}


def make_drafter(method: str, model=None, **options):
    """A fresh drafter for ``method``; Token Recycling sizes its matrix from the model."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if method == "token_recycling":
        options.setdefault("vocab_size", model.get_output_embeddings().weight.shape[0])
        options.setdefault("device", next(model.parameters()).device)
    return METHODS[method](**options)


def generate(model, input_ids, method: str = "greedy", max_new_tokens: int = 256,
             drafter=None, eos_token_id=None, **options) -> Generation:
    """Greedy generation with ``method``'s drafts; the tokens equal plain greedy decoding.

    ``input_ids``: one prompt (list, 1-D tensor or ``[1, n]`` tensor). ``eos_token_id``: one
    id or a list or set of ids, the first of which ends the output (``[]``: none); by default
    every id of the model's ``config.eos_token_id``. Returns a :class:`Generation` (tokens
    and per-step statistics).
    """
    if not hasattr(model, "config") or not getattr(model.config, "use_cache", True):
        raise ValueError("speculative decoding needs a causal LM with a KV cache "
                         "(a transformers model whose config has use_cache=True)")
    drafter = drafter or make_drafter(method, model, **options)
    return run(model, input_ids, drafter, max_new_tokens, eos_token_id)


__all__ = ["generate", "make_drafter", "Generation", "DraftTree", "Greedy", "PromptLookup",
           "TokenRecycling", "Lookahead", "METHODS"]
