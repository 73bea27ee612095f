"""TokenSelect (Wu et al., EMNLP 2025, arXiv 2411.02886): dynamic token-level KV selection.

The cache keeps every token; each decode query attends to a few of them, chosen per layer:

- per-head criticality, the dot products of the query with the cached keys (§3.2; no
  ``1/sqrt(D)``, as in the release): ``s[h, t] = q[h] . k[t, h // G]``;
- soft voting across heads (Eq. 6): ``v[t] = sum_h softmax_t(s[h, :])[t]``, so that every
  head has one vote and no head with large logits dominates;
- the attended set: the first ``n_sink`` tokens (the paper's initial tokens; StreamingLLM's and
  kvpress's sinks), the ``top_k`` middle tokens by vote, and the last ``n_local`` tokens, one set
  shared by all heads of the layer;
- the selection cache (§3.3): while consecutive queries of one sequence stay similar (cosine of
  the flattened query at least ``threshold``), a layer reuses its previous top-k instead of
  scoring again. A prefill starts a new sequence and clears it.

Deviations, all for Hugging Face models: keys are the cache's, rotated at their true
positions (the release scores pre-RoPE keys with a query rotated at ``n_local`` and re-rotates
the selected keys to contiguous positions); query head ``h`` pairs with KV head ``h // G`` (the
release's ``h % Hkv`` is wrong under GQA); the first prefill (no past) attends in full, and
every later query row (decode steps, or each row of a chunk fed after the prefill) selects on
its own. On CUDA the scoring and the attention run the Triton kernels of
``kernels/tokenselect.py``; elsewhere their PyTorch references.

Refused, because selecting over the whole cache would ignore them: sliding-window layers and
attention-logit softcapping (at ``token_select``, from the config, and at call time from what the
attention module passes), and an attention mask other than the causal one (padding) on the
query rows that select.
"""
from __future__ import annotations

import contextlib
import numbers
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from tokenworks.ids import check_count
from tokenworks.models.loader import sliding_attention
from tokenworks.kernels.tokenselect import (gathered_decode_attention,
                                            gathered_decode_attention_reference, qk_scores,
                                            qk_scores_reference)

NAME = "tokenselect"  # the attention implementation registered with transformers


def soft_vote(q: torch.Tensor, keys: torch.Tensor, top_k: int) -> torch.Tensor:
    """Sorted indices [B, top_k] of the keys [B, Hkv, n, D] that query q [B, Hq, D] votes for:
    per-head Q.K scores (the Triton kernel on CUDA), softmax per head, summed over heads (Eq. 6)."""
    scores = (qk_scores if q.is_cuda else qk_scores_reference)(q, keys)  # [B, Hq, n]
    votes = torch.softmax(scores, dim=-1).sum(1)  # [B, n]
    return votes.topk(top_k, dim=-1).indices.sort(-1).values


@dataclass
class TokenSelectState:
    """Settings, the per-layer selection cache, and counters over the query rows after the
    first prefill, summed over layers (``attended / visible`` is the fraction of the cache
    read; ``reused / (selected + reused)`` the selection-cache hit rate)."""

    top_k: int
    n_sink: int
    n_local: int
    threshold: float | None
    previous: dict = field(default_factory=dict)  # layer -> (query [B, Hq*D], top [B, k], cache length)
    selected: int = 0
    reused: int = 0
    attended: int = 0
    visible: int = 0

    def indices(self, layer: int, q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Sorted cache indices [B, L] that query q [B, Hq, D] attends to among keys [B, Hkv, T, D]."""
        B, T = q.shape[0], keys.shape[2]
        every = torch.arange(T, device=q.device).expand(B, T)
        if self.n_sink + self.top_k + self.n_local >= T:
            return every
        flat = q.reshape(B, -1).float()
        prev = self.previous.get(layer)
        if (self.threshold is not None and prev is not None and prev[1].shape[0] == B and prev[2] <= T
                and bool((torch.cosine_similarity(flat, prev[0], dim=-1) >= self.threshold).all())):
            top = prev[1]  # the cache has not shrunk since: still inside the middle
            self.reused += 1
        else:
            middle = keys[:, :, self.n_sink:T - self.n_local]  # [B, Hkv, T - n_sink - n_local, D]
            top = soft_vote(q, middle, self.top_k) + self.n_sink
            self.previous[layer] = (flat, top, T)
            self.selected += 1
        return torch.cat([every[:, :self.n_sink], top, every[:, T - self.n_local:]], 1)


def _causal(attention_mask: torch.Tensor, Q: int, T: int) -> bool:
    """Whether a mask [B or 1, 1, Q, T] (bool, True attends; or additive, 0 attends) lets query
    row i see exactly the cache up to T - Q + i: no padding."""
    attends = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
    rows = torch.arange(T - Q, T, device=attends.device)[:, None]
    return attends.shape[-2:] == (Q, T) and bool((attends == (torch.arange(T, device=attends.device) <= rows)).all())


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function: query [B, Hq, Q, D], key/value [B, Hkv, T, D] (the
    whole cache) -> ([B, Q, Hq, D], None)."""
    state: TokenSelectState | None = getattr(module, "_token_select", None)
    Q, T = query.shape[2], key.shape[2]
    if state is not None and (kwargs.get("sliding_window") is not None or kwargs.get("softcap") is not None):
        raise ValueError(f"{type(module).__name__} asks for sliding_window={kwargs.get('sliding_window')}, "
                         f"softcap={kwargs.get('softcap')}, which TokenSelect's selection over the whole "
                         "cache would ignore: use a model whose layers all attend in full, without softcapping")
    if state is not None and Q == T:  # a prefill: a new sequence, whose queries nothing was selected for
        state.previous.pop(module.layer_idx, None)
    if state is None or Q == T or state.n_sink + state.top_k + state.n_local >= T:
        if state is not None and Q < T:  # after the prefill: everything visible is attended
            state.attended += sum(range(T - Q + 1, T + 1))
            state.visible += sum(range(T - Q + 1, T + 1))
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    if attention_mask is not None and not _causal(attention_mask, Q, T):
        raise ValueError("TokenSelect attends to every cached token up to each query, so it cannot honour "
                         "an attention mask with padding (or a static cache's unfilled slots): run one "
                         "unpadded sequence at a time, with a DynamicCache")
    attend = gathered_decode_attention if query.is_cuda else gathered_decode_attention_reference
    rows = []
    for i in range(Q):  # row i sees the cache up to position T - Q + i
        visible = T - Q + i + 1
        q = query[:, :, i]  # [B, Hq, D]
        idx = state.indices(module.layer_idx, q, key[:, :, :visible])
        rows.append(attend(q, key, value, idx, scale=scaling))
        state.attended += idx.shape[1]
        state.visible += visible
    return torch.stack(rows, 1), None  # [B, Q, Hq, D]


AttentionInterface.register(NAME, _attention)
AttentionMaskInterface.register(NAME, sdpa_mask)  # the masks SDPA gets, for the full-attention path


def _check_attention(model) -> None:
    """Refuse what the selection would ignore: sliding-window layers (``layer_types`` other than
    full attention, or a ``sliding_window`` where the config has no layer types, as Mistral)
    and attention-logit softcapping (Gemma 2)."""
    sliding = sliding_attention(model)
    if sliding:
        raise ValueError(f"TokenSelect selects over the whole cache, so it cannot honour sliding-window "
                         f"attention: {sliding}. Use a model whose layers all attend in full")
    cap = getattr(model.config, "attn_logit_softcapping", None)
    if cap is not None:
        raise ValueError(f"TokenSelect's attention does not apply attention-logit softcapping "
                         f"({type(model).__name__} has attn_logit_softcapping={cap}): use a model without it")


@contextlib.contextmanager
def token_select(model, top_k: int, n_sink: int = 4, n_local: int = 64, threshold: float | None = None):
    """Within the block, ``model``'s decoder layers attend TokenSelect-style; yields the
    :class:`TokenSelectState` (counters). ``threshold`` None: select at every query (the
    release); else reuse a layer's top-k while the query's cosine to the last scored one is
    at least ``threshold`` (the paper's 0.9)."""
    from tokenworks.kvcache import attention_layers  # kvcache imports kvpress

    top_k = check_count("top_k", top_k, 1)
    n_sink, n_local = check_count("n_sink", n_sink, 0), check_count("n_local", n_local, 0)
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
            raise TypeError(f"threshold must be a number in (0, 1] (a cosine similarity) or None, got {threshold!r}")
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1] (a cosine similarity) or None, got {threshold!r}")
    layers = attention_layers(model)
    _check_attention(model)
    state = TokenSelectState(top_k, n_sink, n_local, threshold)
    before = model.config._attn_implementation
    for layer in layers:
        layer._token_select = state
    model.set_attn_implementation(NAME)
    try:
        yield state
    finally:
        model.set_attn_implementation(before)
        for layer in layers:
            del layer._token_select
