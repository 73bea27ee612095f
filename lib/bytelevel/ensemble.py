"""Byte-level ensembles of models with different tokenizers (Phan et al., ICLR 2025, arXiv
2410.09303): each member's exact next-byte distribution (``ByteLM``), mixed in byte space."""
from __future__ import annotations

import math

import torch

from tokenworks.bytelevel.bytelm import ByteLM, decode_bytes


class ByteEnsemble:
    """Models with different tokenizers averaged in byte space (the paper's byte-level
    ensemble): P(b | x) = sum_i w_i P_i(b | x), each member exact as in ``ByteLM``."""

    def __init__(self, members: list[ByteLM], weights: list[float] | None = None):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two ByteLM members, got {len(members)}")
        weights = weights or [1.0] * len(members)
        if len(weights) != len(members) or min(weights) <= 0:
            raise ValueError(f"weights must be {len(members)} positive numbers, got {weights}")
        shared = set.intersection(*(set(m._by_first_byte) for m in members))
        if not shared:
            raise ValueError("the members' vocabularies share no byte a token can start with, so "
                             "their byte distributions have disjoint support; ensemble models "
                             "whose tokenizers cover the same bytes")
        self.members = members
        self.log_weights = torch.tensor(weights, dtype=torch.float64).log() - math.log(sum(weights))

    def next_byte_logprobs(self, prefix: bytes | str, contexts: list[tuple[int, ...]] | None = None):
        """log of the weighted mean of the members' next-byte distributions. ``contexts``:
        one token context per member (their own ids, e.g. FIM sentinels). [257]"""
        contexts = contexts or [()] * len(self.members)
        if len(contexts) != len(self.members):
            raise ValueError(f"give one context per member ({len(self.members)}), got {len(contexts)}")
        parts = [m.next_byte_logprobs(prefix, c) for m, c in zip(self.members, contexts)]
        return torch.logsumexp(torch.stack(parts) + self.log_weights[:, None], 0)

    def generate(self, prompt: bytes | str, max_new_bytes: int = 64, temperature: float = 0.0,
                 generator: torch.Generator | None = None,
                 contexts: list[tuple[int, ...]] | None = None) -> bytes:
        return decode_bytes(lambda x: self.next_byte_logprobs(x, contexts), prompt, max_new_bytes,
                            temperature, generator)
