"""RazorAttention (Tang, Lin, Lin, Han, Hong, Yao, Wang; ICLR 2025, arXiv 2407.15891): KV cache
compression through retrieval heads.

1. **Retrieval heads** (§3.2). A probe of ``n`` distinct random tokens repeated ``repeats``
   times (after BOS) shows which heads look back over the whole context. For a query at
   position ``i`` of a later repeat (``A_h``: head ``h``'s attention probabilities)::

       echo_h(i)      = sum_{m >= 1} A_h[i, i - m n]        (the same token, earlier repeats)
       induction_h(i) = sum_{m >= 1} A_h[i, i - m n + 1]    (the token that followed it)

   averaged over every query of repeats 2.., reduced over each grouped-query group with
   ``max`` (a KV head serves its whole group); the top 14% of KV heads by induction plus the top
   1% by echo, across all layers, are the retrieval heads. The probe's shape (2,500 tokens x 4,
   ``max`` over groups, 14% / 1%) is read from Huawei's ports (MindSpore Golden Stick's
   ``razor_attention``, msModelSlim's ``RARopeCompressConfig``); no GPU code was released.
2. **Compression** (Algorithm 1). Retrieval heads keep their whole cache. Every other head
   keeps ``n_sink`` first tokens, the most recent ones, and one compensation token for the
   dropped set ``D`` (``N_d = |D|``)::

       k_hat = mean_{j in D} k_j        v_hat = mean_{j in D} v_j
       o = (N_d e^{q.k_hat} v_hat + sum_{j not in D} e^{q.k_j} v_j) / (N_d e^{q.k_hat} + sum_{j not in D} e^{q.k_j})

   that is one extra key whose logit carries ``+ ln N_d`` (``module.key_bias``, added by an
   attention-function patch, as kvpress masks keys by patching those functions).

Budget: a non-retrieval head keeps ``int(T * (1 - compression_ratio))`` entries (kvpress's
count), its compensation token included; the paper sets the window from a compression
factor, ``max(S0, N / C)``. ``nonretrieval_budget`` solves for the count that gives a chosen
mean over all heads, for comparisons at equal entries held.

Memory: a DynamicCache holds one length per layer, so a layer with any retrieval head is
padded to the full length (masked, kvpress's ``masked_key_indices``) and saves nothing;
``held_entries`` counts what a head-wise (paged or varlen) layout would hold.
"""
from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kvpress.presses.base_press import BasePress
from kvpress.utils import compute_n_kept
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from tokenworks.ids import check_count, check_ratio
from tokenworks.kvcache.layers import attention_layers, rotated_qk
from tokenworks.models.loader import sliding_attention

INDUCTION_SHARE, ECHO_SHARE = 0.14, 0.01  # of all KV heads (Huawei's ports)


# --- 1. Retrieval heads ----------------------------------------------------------------------

def probe_ids(model, n: int, repeats: int = 4, seed: int = 0) -> list[int]:
    """BOS (where the model has one), then ``n`` distinct random non-special token ids,
    repeated ``repeats`` times."""
    check_count("n", n, 2)
    check_count("repeats", repeats, 2)
    config = model.config
    special = {getattr(config, a, None) for a in ("bos_token_id", "eos_token_id", "pad_token_id")}
    special = {int(i) for s in special if s is not None for i in (s if isinstance(s, (list, tuple)) else [s])}
    pool = torch.tensor([i for i in range(config.vocab_size) if i not in special])
    if n > len(pool):
        raise ValueError(f"the probe needs {n} distinct tokens; the vocabulary has {len(pool)} non-special ones")
    block = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]].tolist()
    bos = config.bos_token_id
    return ([] if bos is None else [int(bos)]) + block * repeats


def echo_induction(q: torch.Tensor, k: torch.Tensor, scaling: float, n: int, start: int,
                   block: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's echo and induction scores from the probe's queries and keys after RoPE:
    q [Hq, T, D], k [Hkv, T, D]; the probe's repeats start at ``start`` (1 after BOS), each
    ``n`` tokens. Returns echo, induction [Hq] (float32), averaged over repeats 2.."""
    Hq, T, D = q.shape
    repeats = (T - start) // n
    if repeats < 2 or start + repeats * n != T:
        raise ValueError(f"a probe of {T} tokens is not {start} + repeats x {n} with at least 2 repeats")
    k = k.repeat_interleave(Hq // k.shape[0], 0).float()  # [Hq, T, D]
    rows = torch.arange(start + n, T, device=q.device)
    back = n * torch.arange(1, repeats, device=q.device)  # m n for m = 1 .. repeats - 1
    echo, induction = q.new_zeros(Hq, dtype=torch.float32), q.new_zeros(Hq, dtype=torch.float32)
    for chunk in rows.split(block):
        logits = q[:, chunk].float() @ k.transpose(1, 2) * scaling  # [Hq, c, T]
        logits.masked_fill_(chunk[:, None] < torch.arange(T, device=q.device), -math.inf)
        p = logits.softmax(-1)
        earlier = chunk[:, None] - back  # [c, m]: the same token in earlier repeats
        seen = (earlier >= start).float()
        for shift, total in ((0, echo), (1, induction)):
            at = (earlier + shift).clamp(min=0).expand(Hq, -1, -1)
            total += (p.gather(-1, at) * seen).sum((1, 2))
    return echo / len(rows), induction / len(rows)


@torch.no_grad()
def head_scores(model, n: int = 2500, repeats: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """The probe's echo and induction scores of every query head, ``{"echo", "induction"}``
    [L, Hq], from one forward of ``probe_ids`` (the attention rows are recomputed from each
    layer's queries and keys, so any attention implementation runs it). Full-attention models
    only: a sliding window's mask would change the rows."""
    sliding = sliding_attention(model)
    if sliding:
        raise ValueError(f"head_scores needs full attention in every layer; this model has {sliding}")
    ids = probe_ids(model, n, repeats, seed)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and len(ids) > limit:
        raise ValueError(f"the probe ({len(ids)} tokens: {n} x {repeats} + BOS) exceeds the model's "
                         f"{limit} positions: lower n")
    start = len(ids) - n * repeats
    scores = {}

    def pre(module, args, kwargs):
        q, k = rotated_qk(module, kwargs["hidden_states"], kwargs["position_embeddings"])
        scores[module.layer_idx] = echo_induction(q[0], k[0], module.scaling, n, start)
    layers = attention_layers(model)
    hooks = [attn.register_forward_pre_hook(pre, with_kwargs=True) for attn in layers]
    try:
        model.model(torch.tensor([ids], device=next(model.parameters()).device), use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    echo, induction = (torch.stack([scores[a.layer_idx][i] for a in layers]).cpu() for i in (0, 1))
    return {"echo": echo, "induction": induction}


def _check_share(name: str, share) -> None:
    if isinstance(share, bool) or not isinstance(share, numbers.Real) or not 0 < share <= 1:
        raise ValueError(f"{name} is a share of the KV heads in (0, 1], got {share!r}")


def retrieval_heads(scores: dict[str, torch.Tensor], kv_heads: int, induction_share: float = INDUCTION_SHARE,
                    echo_share: float = ECHO_SHARE) -> torch.Tensor:
    """bool [L, Hkv]: the top ``induction_share`` of KV heads by induction plus the top
    ``echo_share`` by echo (each at least one head), a KV head scored by the max over its
    query heads."""
    _check_share("induction_share", induction_share)
    _check_share("echo_share", echo_share)
    L, Hq = scores["induction"].shape
    if isinstance(kv_heads, bool) or not isinstance(kv_heads, int) or kv_heads < 1 or Hq % kv_heads:
        raise ValueError(f"kv_heads must divide the {Hq} query heads, got {kv_heads!r}")
    heads = torch.zeros(L * kv_heads, dtype=torch.bool)
    for part, share in (("induction", induction_share), ("echo", echo_share)):
        per_kv = scores[part].view(L, kv_heads, Hq // kv_heads).amax(-1).flatten()
        heads[per_kv.topk(max(1, round(share * len(per_kv)))).indices] = True
    return heads.view(L, kv_heads)


def random_heads(like: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """As many heads as ``like`` marks (bool [L, Hkv]), chosen uniformly at random: the
    ablation that asks whether the probe's choice matters."""
    g = torch.Generator().manual_seed(seed)
    heads = torch.zeros(like.numel(), dtype=torch.bool)
    heads[torch.randperm(like.numel(), generator=g)[:int(like.sum())]] = True
    return heads.view(like.shape)


# --- 2. Compression --------------------------------------------------------------------------

def razor_compress(keys: torch.Tensor, values: torch.Tensor, retrieval: torch.Tensor, n_kept: int, n_sink: int = 4,
                   compensate: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer: keys, values [B, Hkv, T, D]; retrieval bool [Hkv]. A non-retrieval head keeps
    ``n_kept`` entries: ``min(n_sink, n_kept - c)`` sinks, then (``c = 1`` with ``compensate``)
    the compensation token, then the most recent tokens. Returns keys, values [B, Hkv, n, D]
    (``n = T`` if the layer has a retrieval head, else ``n_kept``), ``bias`` [B, Hkv, n] (``ln
    N_d`` at compensation tokens, else 0) and ``valid`` bool [B, Hkv, n] (False: padding)."""
    B, Hkv, T, D = keys.shape
    if not 1 <= n_kept < T:
        raise ValueError(f"a non-retrieval head keeps 1 to {T - 1} of the {T} entries, got {n_kept}")
    c = int(compensate)
    sinks = min(n_sink, n_kept - c)
    recent = n_kept - c - sinks
    parts_k, parts_v = [keys[:, :, :sinks]], [values[:, :, :sinks]]
    if c:
        dropped = slice(sinks, T - recent)
        wide = torch.promote_types(keys.dtype, torch.float32)  # the mean of many entries, in at least float32
        parts_k.append(keys[:, :, dropped].to(wide).mean(2, keepdim=True).to(keys.dtype))  # k_hat
        parts_v.append(values[:, :, dropped].to(wide).mean(2, keepdim=True).to(values.dtype))  # v_hat
    parts_k.append(keys[:, :, T - recent:])
    parts_v.append(values[:, :, T - recent:])
    short_k, short_v = torch.cat(parts_k, 2), torch.cat(parts_v, 2)  # [B, Hkv, n_kept, D]
    n = T if retrieval.any() else n_kept
    pad = (0, 0, 0, n - n_kept)
    ret = retrieval.to(keys.device)[None, :, None, None]
    out_k = torch.where(ret, keys[:, :, :n], F.pad(short_k, pad))
    out_v = torch.where(ret, values[:, :, :n], F.pad(short_v, pad))
    bias = keys.new_zeros(B, Hkv, n, dtype=torch.promote_types(keys.dtype, torch.float32))
    if c:
        bias[:, ~retrieval, sinks] = math.log(T - sinks - recent)
    valid = torch.ones(B, Hkv, n, dtype=torch.bool, device=keys.device)
    valid[:, ~retrieval, n_kept:] = False
    return out_k, out_v, bias, valid


def held_entries(heads: torch.Tensor, context: int, n_kept: int) -> int:
    """Entries a head-wise layout holds: ``context`` per retrieval head, ``n_kept`` per other."""
    r = int(heads.sum())
    return r * context + (heads.numel() - r) * min(n_kept, context)


def nonretrieval_budget(heads: torch.Tensor, context: int, mean_entries: float) -> int:
    """The most entries per non-retrieval head such that all heads together hold at most
    ``mean_entries`` per head on average (``held_entries``), for comparisons at equal size."""
    r, total = int(heads.sum()), heads.numel()
    if r == total:
        raise ValueError("every head is a retrieval head: nothing can be compressed")
    budget = math.floor((mean_entries * total - r * context) / (total - r))
    if budget < 1:
        raise ValueError(f"{r} retrieval heads of {total} alone hold {r * context / total:.0f} entries per head "
                         f"on average at {context} tokens, more than the {mean_entries:g} asked for")
    return budget


def _with_bias(mask: torch.Tensor | None, bias: torch.Tensor, query: torch.Tensor, n_keys: int) -> torch.Tensor:
    """An additive attention mask [B, Hq, q, n_keys]: causal (``mask``, or built) plus
    ``bias`` [B, Hkv, n <= n_keys] on the first ``n`` keys of every query head of its group."""
    B, Hq, q, _ = query.shape
    b = F.pad(bias.repeat_interleave(Hq // bias.shape[1], 1), (0, n_keys - bias.shape[2]))[:, :, None]
    if mask is None:
        at = torch.arange(n_keys - q, n_keys, device=query.device)[:, None]
        mask = torch.arange(n_keys, device=query.device) <= at  # [q, n_keys]
    mask = mask[..., :n_keys]
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=b.dtype, device=query.device).masked_fill(~mask, -math.inf)
    return (mask.to(b.dtype) + b).to(query.dtype)


def _biased(func):
    """An attention function that adds ``module.key_bias`` (the compensation tokens' ``ln N_d``)
    to the logits of the cached keys; a prefill (as many queries as keys) clears it."""
    def wrapper(module, query, key, value, attention_mask, *args, **kwargs):
        bias = getattr(module, "key_bias", None)
        if query.shape[2] == key.shape[2]:
            module.key_bias = None
        elif bias is not None:
            attention_mask = _with_bias(attention_mask, bias, query, key.shape[2])
        return func(module, query, key, value, attention_mask, *args, **kwargs)
    wrapper.adds_key_bias = True
    return wrapper


for _name, _func in list(ALL_ATTENTION_FUNCTIONS.items()):  # after kvpress's own patch (imported above)
    if not getattr(_func, "adds_key_bias", False):
        ALL_ATTENTION_FUNCTIONS[_name] = _biased(_func)


@dataclass
class RazorAttentionPress(BasePress):
    """RazorAttention as a kvpress press: ``heads`` (bool [L, Hkv], ``retrieval_heads``) keep
    the whole cache; every other head keeps ``int(T * (1 - compression_ratio))`` entries:
    ``n_sink`` sinks, one compensation token (``compensate``), the most recent tokens (module
    docstring). ``heads`` may be omitted only at ratio 0."""

    compression_ratio: float = 0.0
    heads: torch.Tensor | None = None
    n_sink: int = 4
    compensate: bool = True

    def __post_init__(self):
        check_ratio("compression_ratio", self.compression_ratio)
        check_count("n_sink", self.n_sink, 0)
        if not isinstance(self.compensate, bool):
            raise TypeError(f"compensate must be True or False, got {self.compensate!r}")
        if self.heads is None and self.compression_ratio > 0:
            raise ValueError("RazorAttentionPress needs its retrieval heads: "
                             "heads=retrieval_heads(head_scores(model), model.config.num_key_value_heads)")
        if self.heads is not None and (not isinstance(self.heads, torch.Tensor) or self.heads.dtype != torch.bool
                                       or self.heads.dim() != 2):
            raise TypeError("heads is a bool tensor [layers, KV heads] (retrieval_heads)")

    @contextlib.contextmanager
    def __call__(self, model):
        """kvpress's ``with press(model):``, with the ``cache_position`` keyword transformers 5.x
        no longer passes (``harness.kvpress_way``)."""
        from tokenworks.kvcache.harness import kvpress_way  # the harness imports this module
        with kvpress_way(self, model):
            yield

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        """keys, values [B, Hkv, T, D] -> [B, Hkv, n, D]; sets ``module.key_bias`` and, where
        the layer has a retrieval head, ``module.masked_key_indices`` (the others' padding)."""
        T = keys.shape[2]
        n_kept = compute_n_kept(T, self.compression_ratio)
        if self.compression_ratio == 0 or n_kept >= T:
            return keys, values
        shape = (module.config.num_hidden_layers, keys.shape[1])
        if tuple(self.heads.shape) != shape:
            raise ValueError(f"heads is {tuple(self.heads.shape)}, this model has {shape} (layers, KV heads): "
                             "score this model's heads (head_scores)")
        if module.config._attn_implementation == "eager":
            raise ValueError("RazorAttentionPress biases and masks keys through patched attention functions, "
                             "which eager attention bypasses: load the model with attn_implementation='sdpa'")
        keys, values, bias, valid = razor_compress(keys, values, self.heads[module.layer_idx], n_kept,
                                                   self.n_sink, self.compensate)
        pad = (~valid).nonzero(as_tuple=True)
        module.masked_key_indices = pad if pad[0].numel() else None
        module.key_bias = bias if self.compensate else None
        return keys.contiguous(), values.contiguous()
