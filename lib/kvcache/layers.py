"""The attention modules methods hook, and their queries and keys after RoPE."""
from __future__ import annotations

import sys

import torch


def attention_layers(model) -> list:
    """The attention modules a press hooks (``model.model.layers[i].self_attn``)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers or not all(hasattr(layer, "self_attn") for layer in layers):
        raise ValueError(f"a press can't hook {type(model).__name__}'s attention: kvpress needs "
                         "model.model.layers[i].self_attn (Llama, Mistral, Qwen, Gemma, Phi-3 "
                         "style decoder-only models)")
    return [layer.self_attn for layer in layers]


def rotated_qk(attn, hidden: torch.Tensor, position_embeddings,
               last_query: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One attention module's queries and keys as its attention sees them (per-head norms of
    Gemma-3 and Qwen-3, then RoPE): ``hidden`` [B, n, d_model] -> q [B, Hq, n, D] (the last
    position only, [B, Hq, 1, D], with ``last_query``), k [B, Hkv, n, D]."""
    B, n, d = hidden.shape[0], hidden.shape[1], attn.head_dim
    q_in = hidden[:, -1:] if last_query else hidden
    q = attn.q_proj(q_in).view(B, q_in.shape[1], -1, d).transpose(1, 2)
    k = attn.k_proj(hidden).view(B, n, -1, d).transpose(1, 2)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    cos, sin = position_embeddings  # [B, n, D]
    q, _ = rope(q, q, cos[:, -q.shape[2]:], sin[:, -q.shape[2]:])
    _, k = rope(k, k, cos, sin)
    return q, k
