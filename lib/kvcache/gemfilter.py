"""GemFilter (Shi et al. 2024, "Discovering the Gems in Early Layers: Accelerating Long-Context
LLMs with 1000x Input Token Reduction", arXiv 2409.17422; github.com/SalesforceAIResearch/GemFilter).

An early layer already knows which input tokens matter. GemFilter runs the prompt through the
first ``r + 1`` layers only, scores every input token at layer ``r`` by the last query's
post-RoPE attention logits summed over heads,

    s_j = sum_h q_{h, n-1} . k_{g(h), j}        (pre-softmax, unscaled; g: h's KV head)

smooths ``s`` with a width-5 average pool, keeps the top-``k`` tokens in their original order
(one index set for every head and layer), and runs the *full* model from scratch on those
``k`` token ids, at positions ``0 .. k - 1``, then decodes as usual (§3, Algorithm 1). Read from
the reference code's ``standard_dis_index`` / ``find_context`` and ``my_greedy_generate_selection``;
written anew on transformers' hooks: the selection pass stops right after layer ``r``'s
queries and keys are known, and keeps no cache.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from tokenworks.ids import as_ids, check_count
from tokenworks.kvcache.layers import attention_layers, rotated_qk

POOL = 5  # the reference code's avg_pool1d kernel


class _Stop(Exception):
    """Raised in the last scoring layer's hook: the layers after it never run."""


def check_layer(model, layer: int) -> None:
    """``layer`` must be one of the model's layers and attend in full (a sliding-window layer's
    last query sees only its window, so its logits cannot rank the whole prompt)."""
    n = len(attention_layers(model))
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise ValueError(f"the selection layer r must be an int in [0, {n - 1}] ({type(model).__name__} "
                         f"has {n} layers), got {layer!r}")
    types = getattr(model.config, "layer_types", None)
    if types and types[layer] != "full_attention":
        full = [i for i, t in enumerate(types) if t == "full_attention"]
        raise ValueError(f"layer {layer} is a {types[layer]} layer: its last query sees only the last "
                         f"{model.config.sliding_window} tokens. Choose a full-attention layer: {full}")


def full_layers(model) -> list[int]:
    """The layers GemFilter can select at: all, less any sliding-window layers."""
    types = getattr(model.config, "layer_types", None)
    n = len(attention_layers(model))
    return [i for i in range(n) if not types or types[i] == "full_attention"]


def _last_query_logits(attn, hidden: torch.Tensor, position_embeddings) -> torch.Tensor:
    """``s_j`` for one attention module: ``hidden`` ``[1, n, d_model]`` -> ``[n]`` (float32 or wider)."""
    q, k = rotated_qk(attn, hidden, position_embeddings, last_query=True)  # [1, Hq, 1, D], [1, Hkv, n, D]
    hkv, d = k.shape[1], k.shape[3]
    q = q[0, :, 0].view(hkv, -1, d)  # [Hkv, G, D]: query heads grouped by their KV head
    dtype = torch.promote_types(q.dtype, torch.float32)
    return torch.einsum("hgd,hnd->n", q.to(dtype), k[0].to(dtype))  # summed over every query head


@torch.no_grad()
def layer_scores(model, ids, layers: list[int]) -> dict[int, torch.Tensor]:
    """``{r: s}`` for every ``r`` in ``layers``, ``s`` ``[n]`` the last query's logits against
    every input token at layer ``r`` (before pooling), from one forward that stops after the
    deepest of ``layers``."""
    ids = as_ids(ids, model)
    if not layers:
        raise ValueError("need at least one layer to score at")
    for r in layers:
        check_layer(model, r)
    modules, scores, last = attention_layers(model), {}, max(layers)

    def hook(r):
        def pre(module, args, kwargs):
            scores[r] = _last_query_logits(module, kwargs["hidden_states"], kwargs["position_embeddings"])
            if r == last:
                raise _Stop
        return pre

    handles = [modules[r].register_forward_pre_hook(hook(r), with_kwargs=True) for r in set(layers)]
    device = next(model.parameters()).device
    try:
        model.model(torch.tensor([ids], device=device), use_cache=False)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return {r: scores[r] for r in layers}


def top_tokens(scores: torch.Tensor, k: int, pool: int = POOL) -> list[int]:
    """The ``k`` positions of highest pooled score, ascending (all of them when ``k >= n``)."""
    check_count("k", k)
    if pool < 1 or pool % 2 == 0:
        raise ValueError(f"pool must be an odd int >= 1, got {pool}")
    smooth = F.avg_pool1d(scores[None, None], pool, stride=1, padding=pool // 2)[0, 0]  # [n]
    return sorted(smooth.topk(min(k, len(smooth))).indices.tolist())


def select(model, ids, k: int, layer: int, pool: int = POOL) -> list[int]:
    """GemFilter's selection: positions of the ``k`` input tokens kept, ascending."""
    check_count("k", k)
    return top_tokens(layer_scores(model, ids, [layer])[layer], k, pool)


@torch.no_grad()
def gemfilter_generate(model, ids, k: int, layer: int, max_new_tokens: int = 32,
                       eos_token_id: int | None = None, pool: int = POOL) -> dict:
    """Select ``k`` tokens of ``ids`` at ``layer`` (:func:`select`), run the full model on them
    from scratch, decode greedily. Returns ``{"tokens", "selected"}``; with ``k >= len(ids)``
    the output is the full model's greedy output."""
    ids = as_ids(ids, model)
    check_count("max_new_tokens", max_new_tokens)
    kept = select(model, ids, k, layer, pool)
    device = next(model.parameters()).device
    cache = DynamicCache(config=model.config)
    logits = model(torch.tensor([[ids[i] for i in kept]], device=device), past_key_values=cache,
                   use_cache=True, logits_to_keep=1).logits[0, -1]
    out = [int(logits.argmax())]
    while len(out) < max_new_tokens and out[-1] != eos_token_id:
        logits = model(torch.tensor([out[-1:]], device=device), past_key_values=cache,
                       use_cache=True).logits[0, -1]
        out.append(int(logits.argmax()))
    return {"tokens": out, "selected": kept}
