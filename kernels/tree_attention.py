"""Triton kernel for tree attention: ``T`` draft-tree queries over the KV cache plus the tree.

The cache (``L`` positions) is visible to every tree node; inside the tree a node sees its
ancestors and itself. Instead of a dense ``[T, L + T]`` mask the kernel reads a bitmask of
``ceil(T / 64)`` int64 words per node (bit ``j`` of node ``i``: ``j`` is ``i`` or an
ancestor of ``i``), so the mask costs ``T * ceil(T / 64) * 8`` bytes whatever ``L`` is.

One program per (block of tree queries, batch x query head); grouped-query attention reads
K/V head ``h // (Hq // Hkv)``. Two loops with one online softmax (FlashAttention-2 style):
unmasked cache blocks, then masked tree blocks. Float32 inputs multiply at IEEE precision
(``tl.dot`` would use TF32 on NVIDIA GPUs), so float32 tree steps match one-token steps as
closely as PyTorch's own float32 attention; half-precision inputs keep Triton's default.

Reference: :func:`tree_attention_reference`, scaled-dot-product attention with the
equivalent 4D mask (tests/test_tree_attention_kernel.py).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from tokenworks.kernels import check_device


def ancestor_bits(ancestors: torch.Tensor) -> torch.Tensor:
    """``[T, T]`` bool ancestor-or-self mask -> ``[T, ceil(T / 64)]`` int64 bit words."""
    T = ancestors.shape[0]
    W = (T + 63) // 64
    bits = torch.zeros(T, W * 64, dtype=torch.int64, device=ancestors.device)
    bits[:, :T] = ancestors.to(torch.int64)
    weights = torch.ones(64, dtype=torch.int64, device=ancestors.device) << torch.arange(
        64, device=ancestors.device)  # bit 63 wraps to the sign bit, as intended
    return (bits.view(T, W, 64) * weights).sum(-1)


def tree_attention_reference(q, k, v, ancestors: torch.Tensor, scale: float | None = None):
    """SDPA with the dense mask. q: [B, Hq, T, D]; k, v: [B, Hkv, L + T, D], the tree's keys
    last; ancestors: [T, T] bool. Returns [B, Hq, T, D]."""
    T, S = q.shape[2], k.shape[2]
    visible = torch.ones(T, S, dtype=torch.bool, device=q.device)
    visible[:, S - T:] = ancestors
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=scale)


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    """``a @ b`` in float32; ``IEEE`` for float32 inputs (tl.dot's default is TF32 on NVIDIA)."""
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _tree_attention_kernel(q_ptr, k_ptr, v_ptr, bits_ptr, o_ptr, T, L, W, Hq, GROUP, scale,
                           stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_ks,
                           stride_ob, stride_oh, stride_ot, D: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                           IEEE: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b, h = bh // Hq, bh % Hq
    kvh = h // GROUP
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # tree nodes (queries)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < T
    mask_d = offs_d < D
    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=mask_m[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    q = q * (scale * 1.4426950408889634)  # exp2 below
    k_base = k_ptr + b * stride_kb + kvh * stride_kh
    v_base = v_ptr + b * stride_kb + kvh * stride_kh
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    # the cache: every key visible
    for n0 in range(0, L, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < L
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_base + offs_n[:, None] * stride_ks + offs_d[None, :], mask=kv_mask, other=0.0)
        s = _dot(q, tl.trans(k.to(tl.float32)), IEEE)  # [BLOCK_M, BLOCK_N]
        s = tl.where(mask_n[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        v = tl.load(v_base + offs_n[:, None] * stride_ks + offs_d[None, :], mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + _dot(p, v.to(tl.float32), IEEE)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new
    # the tree: node j visible to node i iff bit j of row i is set
    for n0 in range(0, T, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < T
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_base + (L + offs_n)[:, None] * stride_ks + offs_d[None, :], mask=kv_mask, other=0.0)
        words = tl.load(bits_ptr + offs_m[:, None] * W + (offs_n // 64)[None, :],
                        mask=mask_m[:, None] & mask_n[None, :], other=0)
        visible = ((words >> (offs_n % 64).to(tl.int64)[None, :]) & 1) != 0
        s = _dot(q, tl.trans(k.to(tl.float32)), IEEE)
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # padded query rows
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        v = tl.load(v_base + (L + offs_n)[:, None] * stride_ks + offs_d[None, :], mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + _dot(p, v.to(tl.float32), IEEE)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new
    out = acc / tl.where(l_i == 0, 1.0, l_i)[:, None]
    tl.store(o_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


def tree_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bits: torch.Tensor,
                   scale: float | None = None, block_m: int = 16, block_n: int = 32) -> torch.Tensor:
    """Tree attention. q: [B, Hq, T, D]; k, v: [B, Hkv, L + T, D] with the tree's keys last;
    bits: [T, ceil(T / 64)] int64 from :func:`ancestor_bits`. Returns [B, Hq, T, D]."""
    check_device(q)
    B, Hq, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    if Hq % Hkv:
        raise ValueError(f"{Hq} query heads are not a multiple of {Hkv} key/value heads")
    if S < T or bits.shape != (T, (T + 63) // 64):
        raise ValueError(f"need k/v with at least T={T} positions and bits of shape "
                         f"[{T}, {(T + 63) // 64}]; got {S} positions, bits {tuple(bits.shape)}")
    q = q.contiguous()
    k, v = k.contiguous(), v.contiguous()
    out = torch.empty_like(q)
    grid = (triton.cdiv(T, block_m), B * Hq)
    _tree_attention_kernel[grid](
        q, k, v, bits.contiguous(), out, T, S - T, bits.shape[1], Hq, Hq // Hkv,
        scale if scale is not None else 1 / math.sqrt(D),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        out.stride(0), out.stride(1), out.stride(2), D=D,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(D)),
        IEEE=q.dtype == torch.float32)
    return out
