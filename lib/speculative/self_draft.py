"""A draft model made of the target's own first ``k`` layers (layer-skipping self-speculation).

The draft runs the target's embeddings, its first ``k`` decoder layers, then its final norm
and LM head: no new weights, the same tokenizer (Draft & Verify, Zhang et al. 2024, arXiv
2309.08168, which skips intermediate layers; LayerSkip, Elhoushi et al. 2024, arXiv
2404.16710, which exits after the first layers, as here, and trains for it; we do not).
The draft shares every parameter with the target and keeps its own KV cache.

:func:`layer_agreement` measures, in one target forward, how often the ``k``-layer exit's
argmax equals the full model's on given text, for every ``k``; :func:`choose_layers` weighs
that against the draft's measured cost.
"""
from __future__ import annotations

import copy

import torch

from tokenworks.speculative.cost import forward_seconds


def depth(model) -> int:
    return model.config.num_hidden_layers


def check_layers(model, layers: int) -> int:
    n = depth(model)
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= n - 1:
        raise ValueError(f"a self-draft keeps 1 to {n - 1} of {type(model).__name__}'s {n} layers "
                         f"(fewer than all, or it is the model itself), got layers={layers!r}")
    return layers


def self_draft(model, layers: int):
    """The first ``layers`` decoder layers of ``model`` with its final norm and LM head, as a
    causal LM that shares ``model``'s parameters (a shallow copy; nothing is duplicated)."""
    check_layers(model, layers)
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "norm"):
        raise ValueError(f"{type(model).__name__} has no .model.layers and .model.norm: a self-draft "
                         "needs a decoder-only model of the Llama family's layout")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers  # the decoder loop runs layers[:num_hidden_layers]
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:layers]
    draft_inner = copy.copy(inner)
    draft_inner._modules = dict(inner._modules)
    draft_inner.config = config
    draft = copy.copy(model)
    draft._modules = {**model._modules, "model": draft_inner}
    draft.config = config
    return draft


@torch.no_grad()
def layer_agreement(model, sequences: list[list[int]]) -> list[float]:
    """``agree[k - 1]``: share of positions where the ``k``-layer exit's argmax equals the full
    model's, over ``sequences`` (teacher-forced on the given tokens), for ``k = 1 .. depth - 1``."""
    device = next(model.parameters()).device
    hits, total = [0] * (depth(model) - 1), 0
    for ids in sequences:
        out = model(torch.tensor([ids], device=device), output_hidden_states=True)
        full = out.logits[0].argmax(-1)  # [n]
        for k in range(1, depth(model)):
            h = model.model.norm(out.hidden_states[k])  # hidden_states[k]: after layer k
            hits[k - 1] += int((model.lm_head(h)[0].argmax(-1) == full).sum())
        total += len(ids)
    return [h / max(1, total) for h in hits]


def chain_rate(accept: float, draft_cost: float, cost, cache_len: int, max_len: int = 16) -> tuple[float, int]:
    """Best expected tokens per unit of step cost of a ``g``-token draft chain, ``1 <= g <=
    max_len`` (``g`` draft steps of relative cost ``draft_cost`` each, then a ``g + 1``-token
    verification), with i.i.d. per-token acceptance ``accept``: ``(rate, g)``. Plain decoding's
    rate is ``1 / cost(1, cache_len)``; a chain pays only above it."""
    return max((sum(accept ** i for i in range(g + 1)) / (g * draft_cost + cost(g + 1, cache_len)), g)
               for g in range(1, max_len + 1))


def choose_layers(model, sequences: list[list[int]], cost, cache_len: int = 256,
                  candidates: list[int] | None = None) -> dict:
    """The self-draft depth ``k`` with the best :func:`chain_rate`, from measured agreement
    (:func:`layer_agreement`) and measured draft cost (one ``k``-layer step over one target
    step at ``cache_len``). Returns ``{"layers", "pays", "greedy_rate", "rows": [{layers,
    agreement, draft_cost, rate, chain}]}``; ``pays`` is False when no depth's chain beats plain
    decoding (``greedy_rate``): ``layers`` is then the least bad depth, to compare trees on."""
    agree = layer_agreement(model, sequences)
    candidates = candidates or list(range(1, depth(model)))
    for k in candidates:
        check_layers(model, k)
    step = forward_seconds(model, 1, cache_len)
    rows = []
    for k in candidates:
        draft_cost = forward_seconds(self_draft(model, k), 1, cache_len) / step
        rate, g = chain_rate(agree[k - 1], draft_cost, cost, cache_len)
        rows.append({"layers": k, "agreement": agree[k - 1], "draft_cost": draft_cost,
                     "rate": rate, "chain": g})
    best = max(rows, key=lambda r: r["rate"])
    greedy = 1.0 / cost(1, cache_len)
    return {"layers": best["layers"], "pays": best["rate"] > greedy, "greedy_rate": greedy, "rows": rows}
