"""CPU linear layers with weights pre-packed for oneDNN: flat cost for a few tokens at once.

On a CPU, ``torch.nn.functional.linear`` goes through the BLAS: with one row it runs a fast
matrix-vector kernel, with 2 to 16 rows a general matrix product that re-packs the weights
on every call. Measured here (SmolLM2-135M, 2 threads, float32), verifying 2 tokens then
costs 1.4-1.7 decoding steps, which caps every speculative method (a tree must gain more
than it costs). oneDNN's pre-packed weights (``torch.ops.mkldnn._reorder_linear_weight``,
the path ``torch.compile``'s CPU backend uses for frozen linear weights) pay the packing
once; then 1 to 16 rows cost about the same. :func:`pack_linears` swaps every
``nn.Linear`` of a model for :class:`PackedLinear` in place; greedy decoding and Hugging
Face ``generate`` on the same model object use it too, so speed-ups compare like with like.
"""
from __future__ import annotations

import torch
from torch import nn


def packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


class PackedLinear(nn.Module):
    """``y = x W^T + b`` through oneDNN with ``W`` packed once (float32, CPU, inference only)."""

    def __init__(self, linear: nn.Linear, batch_hint: int = 16):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # kept for get_output_embeddings() and tied weights
        self.bias = linear.bias
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_hint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def pack_linears(model, batch_hint: int = 16) -> int:
    """Replace every ``nn.Linear`` of ``model`` by a :class:`PackedLinear`; returns how many.
    Refuses a model that is not float32 on the CPU (oneDNN packs those; a GPU needs nothing)."""
    p = next(model.parameters())
    if p.device.type != "cpu" or p.dtype != torch.float32:
        raise ValueError(f"pack_linears packs float32 weights on the CPU; this model is {p.dtype} on "
                         f"{p.device} (on a GPU, leave the model as it is)")
    if not packing_available():
        raise RuntimeError("this torch build has no oneDNN (mkldnn) linear packing: run unpacked")
    swaps = [(parent, name, child) for parent in model.modules()
             for name, child in parent.named_children() if type(child) is nn.Linear]
    with torch.no_grad():
        for parent, name, child in swaps:
            setattr(parent, name, PackedLinear(child, batch_hint))
    return len(swaps)
