"""Triton kernels (``tokenworks.kernels``), each tested against a PyTorch reference.

``KERNELS`` registers every kernel (name -> :class:`KernelSpec`): the kernel function, its
PyTorch reference, and a maker of random inputs for each test shape.
tests/test_kernels_conformance.py iterates over it (CPU under ``TRITON_INTERPRET=1``; CUDA
under the ``gpu`` marker). Functions are named by ``"module:function"`` and imported on
first use, so that importing this package does not import Triton.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Callable

import torch


def check_device(x) -> None:
    """Refuse a CPU tensor unless Triton runs in interpreter mode."""
    if x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("Triton kernels run on a GPU, or on the CPU with TRITON_INTERPRET=1 "
                           "set before triton is first imported")


@dataclass(frozen=True)
class KernelSpec:
    """One kernel and how to check it.

    ``inputs(shape, dtype, generator)`` returns (kernel arguments, reference arguments), CPU
    tensors. ``tol``: (atol, rtol) per dtype, the same on every device (float32 dots ask for
    IEEE precision, never TF32).
    """
    kernel: str
    reference: str
    inputs: Callable
    shapes: tuple
    tol: dict

    @property
    def dtypes(self) -> tuple:
        return tuple(self.tol)

    def functions(self) -> tuple[Callable, Callable]:
        """(kernel, reference), imported."""
        def load(path):
            module, name = path.split(":")
            return getattr(importlib.import_module(module), name)
        return load(self.kernel), load(self.reference)


def _randn(gen, dtype, *shape):
    return torch.randn(*shape, generator=gen).to(dtype)


def _ngram_keys(shape, dtype, gen):
    """(B, Lc, R, Lr, vocab): keys in [0, vocab), a fifth of them 'no n-gram' (-1 / -2)."""
    b, lc, r, lr, vocab = shape
    kc = torch.randint(0, vocab, (b, lc), generator=gen)
    kr = torch.randint(0, vocab, (b, r, lr), generator=gen)
    kc[torch.rand(b, lc, generator=gen) < 0.2] = -1
    kr[torch.rand(b, r, lr, generator=gen) < 0.2] = -2
    return (kc, kr), (kc, kr)


def _qk(shape, dtype, gen):
    """(B, Hq, Hkv, D, T): one decode query per head against T cached keys, scale 0.5."""
    b, hq, hkv, d, t = shape
    q, k = _randn(gen, dtype, b, hq, d), _randn(gen, dtype, b, hkv, t, d)
    return (q, k, 0.5), (q, k, 0.5)


def _gathered(shape, dtype, gen):
    """(B, Hq, Hkv, D, T, L, splits): attention over L selected rows (repeats allowed)."""
    b, hq, hkv, d, t, n, splits = shape
    q = _randn(gen, dtype, b, hq, d)
    k, v = _randn(gen, dtype, b, hkv, t, d), _randn(gen, dtype, b, hkv, t, d)
    idx = torch.randint(0, t, (b, n), generator=gen)
    return (q, k, v, idx, None, splits), (q, k, v, idx)


def _tree(shape, dtype, gen):
    """(T, L, Hq, Hkv, D): a random tree of T nodes (node i's parent before it) over L cached
    positions; the kernel reads ancestor bits, the reference the dense ancestor mask."""
    from tokenworks.kernels.tree_attention import ancestor_bits
    t, cached, hq, hkv, d = shape
    parents = [-1] + [int(torch.randint(0, i, (1,), generator=gen)) for i in range(1, t)]
    anc = torch.eye(t, dtype=torch.bool)
    for i in range(1, t):  # ancestor-or-self: the parent's row plus the node itself
        anc[i] |= anc[parents[i]]
    q = _randn(gen, dtype, 2, hq, t, d)
    k, v = _randn(gen, dtype, 2, hkv, cached + t, d), _randn(gen, dtype, 2, hkv, cached + t, d)
    return (q, k, v, ancestor_bits(anc)), (q, k, v, anc)


_FLOAT_TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (2e-2, 2e-2)}

KERNELS: dict[str, KernelSpec] = {
    "tensorbleu.clipped_counts": KernelSpec(
        "tokenworks.kernels.tensorbleu:clipped_counts_triton",
        "tokenworks.metrics.tensorbleu:clipped_counts_reference", _ngram_keys,
        shapes=((1, 1, 1, 1, 2), (2, 7, 1, 9, 3), (3, 33, 2, 40, 5), (2, 100, 3, 64, 50)),
        tol={torch.int64: (0, 0)}),
    "tokenselect.qk_scores": KernelSpec(
        "tokenworks.kernels.tokenselect:qk_scores",
        "tokenworks.kernels.tokenselect:qk_scores_reference", _qk,
        shapes=((1, 4, 4, 32, 1), (2, 8, 2, 24, 37), (1, 8, 1, 64, 130)),
        tol={torch.float32: (1e-4, 1e-5), torch.float16: (1e-3, 1e-3), torch.bfloat16: (1e-3, 1e-3)}),
    "tokenselect.gathered_decode_attention": KernelSpec(
        "tokenworks.kernels.tokenselect:gathered_decode_attention",
        "tokenworks.kernels.tokenselect:gathered_decode_attention_reference", _gathered,
        shapes=((1, 4, 4, 32, 1, 1, None), (2, 8, 2, 24, 67, 23, 4), (1, 16, 2, 64, 200, 60, 7)),
        tol=_FLOAT_TOL),
    "tree_attention": KernelSpec(
        "tokenworks.kernels.tree_attention:tree_attention",
        "tokenworks.kernels.tree_attention:tree_attention_reference", _tree,
        shapes=((1, 0, 4, 4, 32), (7, 30, 8, 1, 16), (33, 5, 4, 4, 48), (70, 20, 4, 2, 32)),
        tol=_FLOAT_TOL),
}
