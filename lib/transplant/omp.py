"""Batched orthogonal matching pursuit (the paper's §3; mergekit's ``tokensurgeon/omp.py``
``batch_omp``, read and written anew).

For each target ``y`` (a new token's donor embedding) and a dictionary of atoms ``D`` (the
shared tokens' donor embeddings, not normalised), ``k`` greedy steps: pick the atom most
correlated with the residual, ``j_t = argmax_j |<r_{t-1}, D_j>|``, extend an orthonormal basis
of the chosen atoms by Gram-Schmidt (twice, for stability), and remove the residual's part
along it. The coefficients are then the least-squares fit of ``y`` on the chosen atoms::

    c = argmin_c || y - sum_t c_t D_{j_t} ||_2

The argmax over all atoms is the cost (a [targets, atoms] product per step). It is found in two
passes: the correlations in bfloat16 (several times faster on a CPU with AMX or a GPU) give each
target its ``SHORTLIST`` best atoms, which are scored again in the targets' dtype; the pick is
the exact argmax unless bfloat16's rounding (about 2^-8 of a correlation) pushed the true best
atom below the shortlist's last, which the tests check does not happen on random rows and on rows
sharing a common direction, as embedding rows do.
"""
from __future__ import annotations

import torch

from tokenworks.ids import check_count

SHORTLIST = 8  # atoms per target and step re-scored in the targets' dtype after the bfloat16 pass


@torch.no_grad()
def batch_omp(targets: torch.Tensor, atoms: torch.Tensor, k: int, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """targets [N, d], atoms [A, d] -> (indices [N, k'], coefficients [N, k']) with
    ``k' = min(k, A)``, computed ``batch`` targets at a time in the targets' dtype. An atom
    already in the span (its new direction below 1e-6 of its norm, float32) adds no direction."""
    check_count("k", k)
    check_count("batch", batch)
    if targets.dim() != 2 or atoms.dim() != 2 or targets.shape[1] != atoms.shape[1]:
        raise ValueError(f"targets [N, d] and atoms [A, d] must share d; got {tuple(targets.shape)} and {tuple(atoms.shape)}")
    if len(atoms) == 0:
        raise ValueError("no atoms to express the targets with")
    k = min(k, len(atoms))
    atoms = atoms.to(targets.dtype)
    parts = [_omp(targets[i:i + batch], atoms, k) for i in range(0, len(targets), batch)]
    if not parts:
        return targets.new_zeros(0, k, dtype=torch.long), targets.new_zeros(0, k)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _omp(y: torch.Tensor, atoms: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    N, d = y.shape
    rows = torch.arange(N)
    idx = torch.zeros(N, k, dtype=torch.long)
    basis = y.new_zeros(N, k, d)  # orthonormal directions of the chosen atoms
    chosen = torch.zeros(N, len(atoms), dtype=torch.bool)
    coarse = atoms.to(torch.bfloat16)
    m = min(SHORTLIST, len(atoms))
    r = y.clone()
    for t in range(k):
        near = (r.to(coarse.dtype) @ coarse.T).abs_().masked_fill_(chosen, -1).topk(m, dim=-1).indices  # [N, m]
        exact = torch.einsum("nd,nmd->nm", r, atoms[near]).abs_().masked_fill_(chosen.gather(1, near), -1)
        j = near.gather(1, exact.argmax(-1, keepdim=True))[:, 0]
        idx[:, t], chosen[rows, j] = j, True
        a = atoms[j]  # [N, d]
        q = a
        for _ in range(2):  # classical Gram-Schmidt, twice
            q = q - torch.einsum("ntd,nt->nd", basis[:, :t], torch.einsum("ntd,nd->nt", basis[:, :t], q))
        norm = q.norm(dim=-1, keepdim=True)
        q = torch.where(norm > 1e-6 * a.norm(dim=-1, keepdim=True), q / norm, torch.zeros_like(q))
        basis[:, t] = q
        r = r - (r * q).sum(-1, keepdim=True) * q
    A = atoms[idx].transpose(1, 2)  # [N, d, k]
    coef = torch.linalg.lstsq(A, y[..., None], driver="gelsd" if y.device.type == "cpu" else None).solution[..., 0]
    return idx, coef
