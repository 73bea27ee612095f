"""Lossless speculative decoding: drafters and one verification loop.

>>> out = generate(model, input_ids, method="token_recycling", max_new_tokens=128)
>>> out.tokens, out.mean_accepted

Methods: ``greedy`` (the reference), ``prompt_lookup``, ``token_recycling``, ``lookahead``,
``dyspec`` (a draft model's dynamic tree). Options go to the drafter; pass ``drafter=`` to keep one drafter's state across calls
(Token Recycling's matrix, Lookahead's output trie), as the papers do across queries. A
drafter is anything with the :class:`Drafter` protocol's ``start``, ``draft`` and ``update``.

Token Recycling and Lookahead size their trees for the machine: ``cost="auto"`` (the default
of :func:`make_drafter`) measures the model's step cost ``c(T, L)`` once and caches it
(:func:`tokenworks.speculative.cost.calibrate`). ``cost=None`` with ``template="2.2.2"``
(Token Recycling) or alone (Lookahead) gives the papers' fixed trees.
"""
from __future__ import annotations

import inspect

import torch

from tokenworks.ids import check_count
from tokenworks.speculative.cost import StepCost, calibrate
from tokenworks.speculative.drafter import Drafter
from tokenworks.speculative.dyspec import DySpec
from tokenworks.speculative.engine import Generation, Greedy, run
from tokenworks.speculative.lookahead import Lookahead
from tokenworks.speculative.prompt_lookup import PromptLookup
from tokenworks.speculative.token_recycling import TokenRecycling
from tokenworks.speculative.tree import DraftTree

# Drafter classes by name: their instances satisfy the Drafter protocol
METHODS = {"greedy": Greedy, "prompt_lookup": PromptLookup,
           "token_recycling": TokenRecycling, "lookahead": Lookahead, "dyspec": DySpec}
SIZED = ("token_recycling", "lookahead")  # methods whose cost= defaults to "auto" in make_drafter


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")


def _options(method: str) -> list[str]:
    """The option names ``method``'s drafter class takes."""
    return list(inspect.signature(METHODS[method]).parameters)


def make_drafter(method: str, model=None, **options):
    """A fresh drafter for ``method``; ``options`` are its class's arguments, checked by name.

    Token Recycling keeps a matrix row per token: sized from ``model`` (its output
    vocabulary, on its device), or pass ``vocab_size=`` (and ``device=``) without a model.
    Token Recycling and Lookahead take ``cost=``: ``"auto"`` (default: ``calibrate(model)``),
    ``None`` (the paper's tree) or a :class:`~tokenworks.speculative.cost.StepCost`. DySpec
    takes the target ``model`` and ``draft=``, its draft model.
    """
    _check_method(method)
    unknown = sorted(set(options) - set(_options(method)))
    if unknown:
        takes = f"it takes {', '.join(_options(method))}" if _options(method) else "it takes no options"
        raise TypeError(f"unknown option{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} "
                        f"for {method}: {takes}")
    if method in SIZED:
        options = _cost_option(method, model, options)
    if method == "token_recycling":
        options = _recycling_options(model, options)
    if method == "dyspec":
        if model is None:
            raise ValueError("dyspec verifies a draft model's tree: pass the target model "
                             "(make_drafter('dyspec', model, draft=...))")
        options = {"target": model, **options}
    return METHODS[method](**options)


def _cost_option(method: str, model, options: dict) -> dict:
    cost = options.get("cost", "auto")
    if isinstance(cost, str):
        if cost != "auto":
            raise ValueError(f"cost={cost!r}: use 'auto' (measure this model here), None (the "
                             "paper's tree) or a tokenworks.speculative.cost.StepCost")
        if method == "token_recycling" and options.get("template", "auto") != "auto":
            cost = None  # a fixed template needs no cost
        elif model is None:
            raise ValueError(f"{method} with cost='auto' measures the model's step cost: pass the "
                             "model, or cost=None for the paper's fixed tree")
        else:
            cost = calibrate(model)
    elif cost is not None and not callable(cost):
        raise TypeError(f"cost must be 'auto', None or a StepCost, got {type(cost).__name__}")
    return {**options, "cost": cost}


def _recycling_options(model, options: dict) -> dict:
    if model is None:
        if "vocab_size" not in options:
            raise ValueError("token_recycling keeps a matrix row per token: pass the model "
                             "(make_drafter('token_recycling', model)) or vocab_size=")
        return options
    n, device = model.get_output_embeddings().weight.shape[0], next(model.parameters()).device
    if "device" in options and torch.device(options["device"]) != device:
        raise ValueError(f"device={options['device']!r} differs from the model's {device}: the matrix "
                         "lives beside the model (leave device= out)")
    if check_count("vocab_size", options.get("vocab_size", n)) < n:
        raise ValueError(f"vocab_size={options['vocab_size']} is smaller than the model's {n} "
                         "output tokens: the matrix needs a row for every token it can draft")
    return {"vocab_size": n, "device": device, **options}


def generate(model, input_ids, method: str | None = None, max_new_tokens: int = 256,
             drafter=None, eos_token_id=None, **options) -> Generation:
    """Greedy generation with ``method``'s drafts; the tokens equal plain greedy decoding.

    ``method``: a name of ``METHODS`` (default ``greedy``), drafting with a fresh drafter
    made from ``options``; or pass ``drafter=`` to keep one drafter's state across calls
    (then no options, and ``method``, if given, must name the drafter's class).
    ``input_ids``: one prompt (list, 1-D tensor or ``[1, n]`` tensor). ``eos_token_id``: one
    id or a list or set of ids, the first of which ends the output (``[]``: none); by default
    every id of the model's ``config.eos_token_id``. Returns a :class:`Generation` (tokens
    and per-step statistics).
    """
    if not hasattr(model, "config") or not getattr(model.config, "use_cache", True):
        raise ValueError("speculative decoding needs a causal LM with a KV cache "
                         "(a transformers model whose config has use_cache=True)")
    if method is not None:
        _check_method(method)
    if drafter is None:
        drafter = make_drafter(method or "greedy", model, **options)
    elif options:
        raise ValueError(f"options {', '.join(sorted(options))} configure a new drafter, but "
                         "drafter= is given, already configured: pass one or the other")
    elif method is not None and not isinstance(drafter, METHODS[method]):
        raise ValueError(f"method={method!r} but drafter= is a {type(drafter).__name__}: "
                         "pass one or the other")
    return run(model, input_ids, drafter, max_new_tokens, eos_token_id)


__all__ = ["generate", "make_drafter", "calibrate", "StepCost", "Drafter", "Generation", "DraftTree",
           "Greedy", "PromptLookup", "TokenRecycling", "Lookahead", "DySpec", "METHODS"]
