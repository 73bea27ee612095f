"""Triton kernel for TensorBLEU's clipped n-gram counts.

One program per (sentence, block of candidate positions). Each candidate n-gram key is
compared with every key of its own candidate (its count, and whether an equal key comes
earlier) and of each reference (the reference count; the maximum over references). The
first occurrence of each distinct n-gram contributes min(count, max reference count).
O(L^2) comparisons per sentence, no sort and no [B, U] table: on a GPU the comparisons
are cheap and the memory is O(B * L).

Reference: ``tokenworks.metrics.tensorbleu._clipped_sort`` (tests/test_tensorbleu_kernel.py).
"""
from __future__ import annotations


import torch
import triton
import triton.language as tl

from tokenworks.kernels import check_device


@triton.jit
def _clipped_counts_kernel(kc_ptr, kr_ptr, out_ptr, Lc, R, Lr, n_blocks,
                           BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    b = tl.program_id(0)
    pid = tl.program_id(1)
    offs_i = pid * BLOCK_I + tl.arange(0, BLOCK_I)
    mask_i = offs_i < Lc
    ki = tl.load(kc_ptr + b * Lc + offs_i, mask=mask_i, other=-1)  # [BLOCK_I]
    count_c = tl.zeros([BLOCK_I], dtype=tl.int32)
    earlier = tl.zeros([BLOCK_I], dtype=tl.int32)
    for j0 in range(0, Lc, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        kj = tl.load(kc_ptr + b * Lc + offs_j, mask=offs_j < Lc, other=-3)
        eq = ki[:, None] == kj[None, :]  # [BLOCK_I, BLOCK_J]
        count_c += tl.sum(eq.to(tl.int32), 1)
        earlier += tl.sum((eq & (offs_j[None, :] < offs_i[:, None])).to(tl.int32), 1)
    best = tl.zeros([BLOCK_I], dtype=tl.int32)
    for r in range(R):
        count_r = tl.zeros([BLOCK_I], dtype=tl.int32)
        for j0 in range(0, Lr, BLOCK_J):
            offs_j = j0 + tl.arange(0, BLOCK_J)
            kj = tl.load(kr_ptr + (b * R + r) * Lr + offs_j, mask=offs_j < Lr, other=-3)
            count_r += tl.sum((ki[:, None] == kj[None, :]).to(tl.int32), 1)
        best = tl.maximum(best, count_r)
    keep = mask_i & (ki >= 0) & (earlier == 0)
    contrib = tl.where(keep, tl.minimum(count_c, best), 0)
    tl.store(out_ptr + b * n_blocks + pid, tl.sum(contrib, 0))


def clipped_counts_triton(kc: torch.Tensor, kr: torch.Tensor, block_i: int = 32,
                          block_j: int = 64) -> torch.Tensor:
    """Clipped matches per sentence [B] (int64).

    kc: [B, Lc] int64 candidate n-gram keys, -1 where there is no n-gram;
    kr: [B, R, Lr] int64 reference keys, -2 where there is no n-gram.
    """
    check_device(kc)
    kc, kr = kc.contiguous(), kr.contiguous()
    (B, Lc), (R, Lr) = kc.shape, kr.shape[1:]
    n_blocks = triton.cdiv(Lc, block_i)
    out = torch.zeros((B, n_blocks), dtype=torch.int32, device=kc.device)
    if B and Lc:
        _clipped_counts_kernel[(B, n_blocks)](kc, kr, out, Lc, R, Lr, n_blocks,
                                              BLOCK_I=block_i, BLOCK_J=block_j)
    return out.sum(1).long()
