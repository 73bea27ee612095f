"""Triton kernels for TokenSelect (Wu et al. 2025): per-head Q.K scoring of the cache, and
decode attention over a gathered set of cached tokens.

``qk_scores``: one decode query per head against every cached key, ``[B, Hq, T]`` in fp32.
One program per (block of ``T``, batch x KV head) scores the ``G = Hq / Hkv`` query heads that
share the KV head, so each key is read once (the TokenSelect release reads it once per query
head, and pairs query head ``h`` with KV head ``h % Hkv`` where Hugging Face uses ``h // G``;
we use ``h // G``). No ``1/sqrt(D)`` by default, as in the release.

``gathered_decode_attention``: one decode query per head attends to the cached tokens listed
in ``idx [B, L]`` (one set per batch row, shared by all heads, as TokenSelect selects per
layer). Split-K in two stages, the layout of the SGLang/lightllm decode kernels: stage 1, one
program per (batch, KV head, split) walks its share of ``idx``, gathers K/V rows by index,
runs an online softmax for the ``G`` query heads of the KV head and writes a normalised partial
output and its log-sum-exp; stage 2 merges the splits with LSE weights.

References (tests/test_tokenselect_kernel.py, reproduce/bench_tokenselect.py):
:func:`qk_scores_reference`, :func:`gathered_decode_attention_reference`.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from tokenworks.kernels import check_device


def qk_scores_reference(q: torch.Tensor, k: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """q: [B, Hq, D]; k: [B, Hkv, T, D] -> [B, Hq, T] fp32, query head h against KV head h // G."""
    B, Hq, D = q.shape
    Hkv = k.shape[1]
    qg = q.float().view(B, Hkv, Hq // Hkv, D)
    return torch.einsum("bkgd,bktd->bkgt", qg, k.float()).reshape(B, Hq, -1) * scale


def gathered_decode_attention_reference(q, k, v, idx: torch.Tensor, scale: float | None = None):
    """SDPA of q: [B, Hq, D] over the rows ``idx [B, L]`` of k, v: [B, Hkv, T, D] (fp32 math).
    Returns [B, Hq, D] in q's dtype."""
    B, Hq, D = q.shape
    Hkv = k.shape[1]
    at = idx[:, None, :, None].expand(B, Hkv, idx.shape[1], D)
    ks, vs = k.float().gather(2, at), v.float().gather(2, at)  # [B, Hkv, L, D]
    out = torch.nn.functional.scaled_dot_product_attention(
        q.float()[:, :, None], ks.repeat_interleave(Hq // Hkv, 1), vs.repeat_interleave(Hq // Hkv, 1),
        scale=scale)
    return out[:, :, 0].to(q.dtype)


def _check_heads(q: torch.Tensor, k: torch.Tensor) -> tuple[int, int]:
    if q.dim() != 3 or k.dim() != 4 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[3]:
        raise ValueError(f"need q [B, Hq, D] and k [B, Hkv, T, D]; got {tuple(q.shape)}, {tuple(k.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"{q.shape[1]} query heads are not a multiple of {k.shape[1]} key/value heads")
    if q.dtype not in (torch.float16, torch.float32, torch.bfloat16) or k.dtype != q.dtype:
        raise ValueError(f"need q and k of one float dtype; got {q.dtype}, {k.dtype}")
    return k.shape[1], q.shape[1] // k.shape[1]


def _rows_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


@triton.jit
def _qk_scores_kernel(q_ptr, k_ptr, s_ptr, T, Hkv, G, scale,
                      stride_qb, stride_qh, stride_kb, stride_kh, stride_kt, stride_sb, stride_sh,
                      D: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_T: tl.constexpr,
                      BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    pid_t = tl.program_id(0)
    bk = tl.program_id(1)
    b, kvh = bk // Hkv, bk % Hkv
    offs_h = tl.arange(0, BLOCK_H)  # query heads of this KV head: kvh * G + offs_h
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    mask_h, mask_t, mask_d = offs_h < G, offs_t < T, offs_d < D
    q = tl.load(q_ptr + b * stride_qb + (kvh * G + offs_h)[:, None] * stride_qh + offs_d[None, :],
                mask=mask_h[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    k = tl.load(k_ptr + b * stride_kb + kvh * stride_kh + offs_t[:, None] * stride_kt + offs_d[None, :],
                mask=mask_t[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    if IEEE:
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))  # [BLOCK_H, BLOCK_T]
    tl.store(s_ptr + b * stride_sb + (kvh * G + offs_h)[:, None] * stride_sh + offs_t[None, :],
             s * scale, mask=mask_h[:, None] & mask_t[None, :])


def qk_scores(q: torch.Tensor, k: torch.Tensor, scale: float = 1.0, block_t: int = 64) -> torch.Tensor:
    """Per-head Q.K scores. q: [B, Hq, D]; k: [B, Hkv, T, D] (any strides with contiguous rows,
    e.g. a slice of the cache) -> [B, Hq, T] fp32, query head h against KV head h // G."""
    check_device(q)
    Hkv, G = _check_heads(q, k)
    B, Hq, D = q.shape
    T = k.shape[2]
    q, k = _rows_contiguous(q), _rows_contiguous(k)
    out = torch.empty(B, Hq, T, dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(T, block_t), B * Hkv)
    _qk_scores_kernel[grid](
        q, k, out, T, Hkv, G, scale, q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
        out.stride(0), out.stride(1), D=D, BLOCK_H=max(16, triton.next_power_of_2(G)),
        BLOCK_T=block_t, BLOCK_D=max(16, triton.next_power_of_2(D)), IEEE=q.dtype == torch.float32)
    return out


@triton.jit
def _gathered_stage1(q_ptr, k_ptr, v_ptr, idx_ptr, part_ptr, lse_ptr, L, Hkv, G, S, chunk, scale,
                     stride_qb, stride_qh, stride_kb, stride_kh, stride_kt,
                     stride_vb, stride_vh, stride_vt, stride_ib,
                     D: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    bk = tl.program_id(0)
    split = tl.program_id(1)
    b, kvh = bk // Hkv, bk % Hkv
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    mask_h, mask_d = offs_h < G, offs_d < D
    heads = kvh * G + offs_h
    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=mask_h[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    q = q * (scale * 1.4426950408889634)  # exp2 below
    k_base = k_ptr + b * stride_kb + kvh * stride_kh
    v_base = v_ptr + b * stride_vb + kvh * stride_vh
    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    start = split * chunk
    end = tl.minimum(start + chunk, L)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < end
        rows = tl.load(idx_ptr + b * stride_ib + offs_n, mask=mask_n, other=0).to(tl.int64)
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_base + rows[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0)
        if IEEE:
            s = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k.to(tl.float32)))  # [BLOCK_H, BLOCK_N]
        s = tl.where(mask_n[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        v = tl.load(v_base + rows[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32))
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new
    # an empty split (start >= L) leaves l_i = 0: its LSE is -inf and stage 2 gives it no weight
    out = acc / tl.where(l_i == 0, 1.0, l_i)[:, None]
    lse = tl.where(l_i == 0, float("-inf"), m_i + tl.log2(tl.where(l_i == 0, 1.0, l_i)))  # base 2
    row = (b * Hkv * G + heads) * S + split  # part: [B, Hq, S, D], lse: [B, Hq, S]
    tl.store(part_ptr + row[:, None] * D + offs_d[None, :], out, mask=mask_h[:, None] & mask_d[None, :])
    tl.store(lse_ptr + row, lse, mask=mask_h)


@triton.jit
def _gathered_stage2(part_ptr, lse_ptr, o_ptr, S, stride_ob, stride_oh, Hq,
                     D: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    bh = tl.program_id(0)
    b, h = bh // Hq, bh % Hq
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    mask_s, mask_d = offs_s < S, offs_d < D
    lse = tl.load(lse_ptr + bh * S + offs_s, mask=mask_s, other=float("-inf"))
    m = tl.max(lse, 0)
    w = tl.exp2(lse - m)  # [BLOCK_S], 0 for empty splits
    part = tl.load(part_ptr + (bh * S + offs_s)[:, None] * D + offs_d[None, :],
                   mask=mask_s[:, None] & mask_d[None, :], other=0.0)
    out = tl.sum(part * w[:, None], 0) / tl.sum(w, 0)
    tl.store(o_ptr + b * stride_ob + h * stride_oh + offs_d, out.to(o_ptr.dtype.element_ty), mask=mask_d)


def default_splits(n_selected: int, batch_kv_heads: int) -> int:
    """Splits of the selected tokens: at least 128 tokens each, enough programs to fill a
    large GPU (about 256), at most 64."""
    return max(1, min(64, triton.cdiv(n_selected, 128), triton.cdiv(256, batch_kv_heads)))


def gathered_decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor,
                              scale: float | None = None, splits: int | None = None,
                              block_n: int = 32) -> torch.Tensor:
    """Decode attention over selected cache rows. q: [B, Hq, D]; k, v: [B, Hkv, T, D] (rows
    contiguous); idx: [B, L] integer indices in [0, T), shared by all heads. The kernel does not
    range-check its loads: on the CPU (the interpreter) ``idx`` is checked here, for free; on
    CUDA it is not, as the check would cost a device sync per call (one per layer and decode
    step), so callers build indices in range (``tokenworks.kvcache.tokenselect`` does, by
    construction). Returns [B, Hq, D] in q's dtype."""
    check_device(q)
    Hkv, G = _check_heads(q, k)
    if v.shape != k.shape or v.dtype != k.dtype:
        raise ValueError(f"need v like k {tuple(k.shape)}; got {tuple(v.shape)}")
    if (idx.dim() != 2 or idx.shape[0] != q.shape[0] or idx.shape[1] == 0 or idx.is_floating_point()
            or idx.dtype == torch.bool):
        raise ValueError(f"need integer idx [B={q.shape[0]}, L>0]; got {tuple(idx.shape)} {idx.dtype}")
    T = k.shape[2]
    if idx.device.type == "cpu" and not bool(((idx >= 0) & (idx < T)).all()):
        raise ValueError(f"idx holds rows outside the cache [0, {T}): {idx[(idx < 0) | (idx >= T)][:5].tolist()}")
    B, Hq, D = q.shape
    L = idx.shape[1]
    S = splits or default_splits(L, B * Hkv)
    chunk = triton.cdiv(L, S)
    q, k, v, idx = _rows_contiguous(q), _rows_contiguous(k), _rows_contiguous(v), idx.contiguous()
    part = torch.empty(B, Hq, S, D, dtype=torch.float32, device=q.device)
    lse = torch.empty(B, Hq, S, dtype=torch.float32, device=q.device)
    ieee = q.dtype == torch.float32
    _gathered_stage1[(B * Hkv, S)](
        q, k, v, idx, part, lse, L, Hkv, G, S, chunk, scale if scale is not None else 1 / math.sqrt(D),
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), idx.stride(0), D=D,
        BLOCK_H=max(16, triton.next_power_of_2(G)), BLOCK_N=block_n,
        BLOCK_D=max(16, triton.next_power_of_2(D)), IEEE=ieee)
    out = torch.empty(B, Hq, D, dtype=q.dtype, device=q.device)
    _gathered_stage2[(B * Hq,)](part, lse, out, S, out.stride(0), out.stride(1), Hq, D=D,
                                BLOCK_S=max(2, triton.next_power_of_2(S)),
                                BLOCK_D=max(16, triton.next_power_of_2(D)))
    return out
