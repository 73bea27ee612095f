"""Verify draft trees with the Triton tree-attention kernel inside a Hugging Face model.

>>> use_tree_kernel(model)        # registers the attention function, switches the model to it
>>> generate(model, ids, method="token_recycling")   # tree steps now run kernels/tree_attention.py

Tree steps pass the tree as ancestor bit words (``tree_bits``) down to every attention layer
and no dense ``[T, L + T]`` mask is built (transformers builds none for a registered custom
attention either). Every other forward (prefill, one-token steps) falls through to PyTorch's
scaled-dot-product attention (causal without a mask), so outputs are unchanged.
"""
from __future__ import annotations

from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from tokenworks.speculative.engine import TREE_KERNEL


def tree_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                           scaling: float | None = None, tree_bits=None, **kwargs):
    """query: [B, Hq, T, D]; key, value: [B, Hkv, L + T, D] (cache plus tree).
    Returns ([B, T, Hq, D], None) like the other attention functions of transformers."""
    if tree_bits is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    from tokenworks.kernels.tree_attention import tree_attention

    out = tree_attention(query, key, value, tree_bits, scale=scaling)  # [B, Hq, T, D]
    return out.transpose(1, 2).contiguous(), None


def use_tree_kernel(model):
    """Switch ``model``'s attention to :func:`tree_attention_forward` (returns the model)."""
    AttentionInterface.register(TREE_KERNEL, tree_attention_forward)
    model.set_attn_implementation(TREE_KERNEL)
    return model
